"""Walking integrity rules over their rows in keyset batches.

A position is [rule index, last id]. A batch takes the next batch_size ids of the
current rule's rows, finds the broken ones among them with one query, and (with fix,
outside a dry run) writes every planned repair with one UPDATE that re-checks the rule.
"""

from django.utils import timezone

from maintenance.operations.base import BatchResult, FindingRecord
from maintenance.operations.bulk import set_values


def _as_json(values):
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}


def check_batch(rules, *, chronicle_id, fix, position, batch_size, dry_run):
    index, after_id = position or (0, 0)
    while index < len(rules):
        rule = rules[index]
        ids = list(
            rule.scope(chronicle_id)
            .filter(id__gt=after_id)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if ids:
            break
        index, after_id = index + 1, 0  # this rule is done: the same batch goes on
    else:
        return BatchResult(processed=0, changed=0, position=[index, 0], done=True)

    rows = rule.scope(chronicle_id).filter(id__gte=ids[0], id__lte=ids[-1])
    broken = rule.broken(rows).order_by("id").values(*rule.values())
    plans = {row["id"]: rule.plan(row) for row in broken}
    repairs = {pk: plan.after for pk, plan in plans.items() if fix and plan.after}
    if repairs and not dry_run:
        written = set_values(rule.recheck(rows), repairs, **rule.written_too(timezone.now()))
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
    more = len(ids) == batch_size
    next_position = [index, ids[-1]] if more else [index + 1, 0]
    return BatchResult(
        processed=len(ids),
        changed=written,
        position=next_position,
        done=next_position[0] >= len(rules),
        changed_ids=sorted(repairs),
        findings=findings,
    )
