"""Walking integrity rules over their rows in keyset batches.

A position is [rule index, last id]. Rules come in two kinds:

- sparse rules (a plain filter, like "no owner"): a batch is the next batch_size broken
  rows, found with one query that the database answers from its indexes, and a count of
  the rows that covered; clean data costs one batch per rule;
- dense rules (a comparison per row, like "xp differs from the ledger"): a batch is the
  next batch_size rows, and one query finds the broken ones among them.

With fix, outside a dry run, one UPDATE that re-checks the rule writes every repair.
"""

from django.utils import timezone

from maintenance.operations.base import BatchResult, FindingRecord
from maintenance.operations.bulk import set_values


def _as_json(values):
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}


def _next_batch(rule, scope, batch_size):
    """(broken rows, rows looked at, last id covered or None for the end)."""
    if rule.sparse:
        broken = list(rule.broken(scope).order_by("id").values(*rule.values())[:batch_size])
        last = broken[-1]["id"] if len(broken) == batch_size else None
        covered = scope if last is None else scope.filter(id__lte=last)
        return broken, covered.count(), last
    ids = list(scope.order_by("id").values_list("id", flat=True)[:batch_size])
    if not ids:
        return [], 0, None
    rows = scope.filter(id__lte=ids[-1])
    broken = list(rule.broken(rows).order_by("id").values(*rule.values()))
    return broken, len(ids), ids[-1] if len(ids) == batch_size else None


def check_batch(rules, *, chronicle_id, fix, position, batch_size, dry_run):
    index, after_id = position or (0, 0)
    if index >= len(rules):
        return BatchResult(processed=0, changed=0, position=[index, 0], done=True)
    rule = rules[index]
    scope = rule.scope(chronicle_id).filter(id__gt=after_id)
    broken, processed, last = _next_batch(rule, scope, batch_size)

    plans = {row["id"]: rule.plan(row) for row in broken}
    repairs = {pk: plan.after for pk, plan in plans.items() if fix and plan.after}
    if repairs and not dry_run:
        written = set_values(rule.recheck(scope), repairs, **rule.written_too(timezone.now()))
    else:
        written = len(repairs)
    findings = [
        FindingRecord(
            rule=rule.code,
            model=rule.model_label,
            object_id=pk,
            message=plan.message,
            fixed=pk in repairs and not dry_run,
            before=plan.before,
            after=_as_json(plan.after) if plan.after and pk in repairs else None,
        )
        for pk, plan in plans.items()
    ]
    next_position = [index, last] if last is not None else [index + 1, 0]
    return BatchResult(
        processed=processed,
        changed=written,
        position=next_position,
        done=next_position[0] >= len(rules),
        changed_ids=sorted(repairs),
        findings=findings,
    )
