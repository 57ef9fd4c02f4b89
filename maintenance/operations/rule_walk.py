"""Walking integrity rules over their rows in keyset batches.

Each rule is a walk of its own; validate_data_integrity chains them by rule code. Rules
come in two kinds:

- sparse rules (a plain filter, like "no owner"): a batch is the next batch_size broken
  rows, found with one query that the database answers from its indexes, and a count of
  the rows that covered; clean data costs one batch per rule;
- dense rules (a comparison per row, like "xp differs from the ledger"): a batch is the
  next batch_size rows, and one query finds the broken ones among them.

With fix, outside a dry run, one UPDATE that re-checks the rule writes every repair.
"""

from django.utils import timezone

from maintenance.engine.iteration import Batch, ChainedWalk, FindingRecord, Outcome
from maintenance.operations.bulk import set_values


def _as_json(values):
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}


class RuleWalk:
    """One rule's rows after an id; a batch's items are its broken rows."""

    def __init__(self, rule, chronicle_id):
        self.rule = rule
        self.chronicle_id = chronicle_id

    def _scope(self, after_id):
        return self.rule.scope(self.chronicle_id).filter(id__gt=after_id or 0)

    def batch_after(self, position, size):
        rule, scope = self.rule, self._scope(position)
        if rule.sparse:
            broken = list(rule.broken(scope).order_by("id").values(*rule.values())[:size])
            last = broken[-1]["id"] if len(broken) == size else None
            covered = scope if last is None else scope.filter(id__lte=last)
            processed = covered.count()
        else:
            ids = list(scope.order_by("id").values_list("id", flat=True)[:size])
            rows = scope.filter(id__lte=ids[-1]) if ids else scope.none()
            broken = list(rule.broken(rows).order_by("id").values(*rule.values())) if ids else []
            last = ids[-1] if len(ids) == size else None
            processed = len(ids)
        return Batch(items=broken, processed=processed, position=last, done=last is None)

    def count_after(self, position):
        return self._scope(position).count()


def rules_walk(rules, chronicle_id):
    """The rules one after another, the position keyed by rule code."""
    return ChainedWalk({rule.code: RuleWalk(rule, chronicle_id) for rule in rules})


def check_rows(rule, rows, *, chronicle_id, fix, dry_run):
    """Findings for `rule`'s broken `rows`, and with fix the repairs, written in one
    UPDATE that re-checks the rule (outside a dry run)."""
    plans = {row["id"]: rule.plan(row) for row in rows}
    repairs = {pk: plan.after for pk, plan in plans.items() if fix and plan.after}
    if repairs and not dry_run:
        scope = rule.scope(chronicle_id)
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
    return Outcome(changed=written, changed_ids=sorted(repairs), findings=findings)
