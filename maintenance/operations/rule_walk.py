"""Walking integrity rules over their rows in keyset batches.

Each rule is a walk of its own; validate_data_integrity chains them by rule code. Rules
come in two kinds:

- sparse rules (a plain filter, like "no owner"): a batch is the next batch_size broken
  rows (at most MAX_BROKEN_PER_BATCH), found with one query that the database answers
  from its indexes, and a count of the rows that covered (at most MAX_SPAN_PER_BATCH
  ids); clean data costs one batch per rule and million ids;
- dense rules (a comparison per row, like "xp differs from the ledger"): a batch is the
  next batch_size rows, whose id range one query finds (without sending the ids), and
  one join against an aggregate over that range finds the broken ones among them.

With fix, outside a dry run, one UPDATE that re-checks the rule writes every repair.
"""

from django.db.models import Count, Max, QuerySet
from django.utils import timezone

from maintenance.engine.iteration import (
    Batch,
    ChainedWalk,
    FindingRecord,
    Outcome,
    Range,
    id_range,
    within,
)
from maintenance.operations import changes
from maintenance.operations.bulk import set_values

# A sparse batch's time and memory go with its broken rows, not with the rows it covers:
# each is a finding, about 50-100 us to plan and record and a few KB held until the batch
# commits. 10,000 of them (a batch size that suits the dense rules) took about a second
# at a million scenes; 1,000 keep a batch well under the target batch time and its
# memory the same whatever the table's size.
MAX_BROKEN_PER_BATCH = 1000
# Counting the rows a sparse batch covers reads them all (about 50 ms a million): where
# the broken rows are far apart, or none are left, a batch covers at most this many ids.
MAX_SPAN_PER_BATCH = 1_000_000


class RuleWalk:
    """One rule's rows after an id; a batch's items are its broken rows.

    `counts` may be shared by the walks of one chain: rules over the same rows (three
    look at every scene) then count them once for the run's progress. `bounds` keeps a
    partition's walk to its id range."""

    def __init__(self, rule, chronicle_id, counts: dict | None = None, bounds: Range | None = None):
        self.rule = rule
        self.chronicle_id = chronicle_id
        self.counts = {} if counts is None else counts
        self.bounds = bounds

    def _scope(self, after_id):
        scope = within(self.rule.scope(self.chronicle_id), self.bounds)
        return scope.filter(id__gt=after_id or 0)

    def batch_after(self, position, size):
        if self.rule.sparse:
            return self._sparse_batch(position, size)
        return self._dense_batch(position, size)

    def _sparse_batch(self, position, size):
        rule, scope = self.rule, self._scope(position)
        size = min(size, MAX_BROKEN_PER_BATCH)
        broken = list(rule.broken(scope).order_by("id").values(*rule.values())[:size])
        reach = self._start(position) + MAX_SPAN_PER_BATCH
        if len(broken) == size and broken[-1]["id"] <= reach:
            last = broken[-1]["id"]  # a full batch
        elif _any_after(scope, reach):
            broken = [row for row in broken if row["id"] <= reach]
            last = reach  # the rows beyond are the next batch's
        else:
            last = None  # the rest of the rows, and the walk is done
        covered = scope if last is None else scope.filter(id__lte=last)
        return Batch(items=broken, processed=covered.count(), position=last, done=last is None)

    def _dense_batch(self, position, size):
        rule, scope = self.rule, self._scope(position)
        # How many rows the next `size` are and where they end, counted in the database.
        bounds = scope.order_by("id")[:size].aggregate(rows=Count("id"), last=Max("id"))
        if not bounds["rows"]:
            return Batch(items=[], processed=0, position=None, done=True)
        rows = scope.filter(id__lte=bounds["last"])
        broken = rule.broken_rows_between(rows, self._start(position), bounds["last"])
        last = bounds["last"] if bounds["rows"] == size else None
        return Batch(items=broken, processed=bounds["rows"], position=last, done=last is None)

    def count_after(self, position):
        scope = self._scope(position)
        sql, params = scope.query.sql_with_params()
        key = (sql, tuple(params))  # the same rows, whichever rule looks at them
        if key not in self.counts:
            self.counts[key] = scope.count()
        return self.counts[key]

    def key_ranges(self):
        return {"": id_range(self.rule.scope(self.chronicle_id))}

    def bounded(self, bounds):
        return RuleWalk(self.rule, self.chronicle_id, self.counts, bounds.get(""))

    def _start(self, position) -> int:
        """The id the walk is after: its position, or just below its range at first."""
        lower = (self.bounds or (None, None))[0]
        return max(position or 0, lower - 1 if lower is not None else 0)


def _any_after(scope: QuerySet, after_id: int) -> bool:
    """Whether `scope` has rows after `after_id`: the first in id order, which the primary
    key answers. (exists() drops the order, and a sequential scan, which the planner then
    picks, reads every row before `after_id` first.)"""
    return bool(scope.filter(id__gt=after_id).order_by("id").values_list("id", flat=True)[:1])


def rules_walk(rules, chronicle_id):
    """The rules one after another, the position keyed by rule code."""
    counts = {}
    return ChainedWalk({rule.code: RuleWalk(rule, chronicle_id, counts) for rule in rules})


def check_rows(rule, rows, *, chronicle_id, fix, dry_run):
    """Findings for `rule`'s broken `rows`, and with fix the repairs, written in one
    UPDATE that re-checks the rule (outside a dry run). A fixed finding records every
    value the fix wrote, as it was and as it became, so that a revert can put it back."""
    plans = {row["id"]: rule.plan(row) for row in rows}
    repairs = {pk: plan.after for pk, plan in plans.items() if fix and plan.after}
    also_written = {}
    if repairs and not dry_run:
        also = rule.written_too(timezone.now())
        repairs, held = _unchanged_since_checked(rule, repairs, plans, also)
        if set_values(rule.recheck(rule.scope(chronicle_id)), repairs, **also) < len(repairs):
            repairs = _holding(rule, repairs)  # the re-check left some out
        if also:
            also_written = {
                pk: {"before": held[pk], "after": changes.values_as_json(also)} for pk in repairs
            }
    findings = [
        FindingRecord(
            rule=rule.code,
            model=rule.model_label,
            object_id=pk,
            message=plan.message,
            fixed=pk in repairs and not dry_run,
            before=plan.before,
            after=changes.values_as_json(repairs[pk]) if pk in repairs else None,
            also_written=also_written.get(pk),
        )
        for pk, plan in plans.items()
    ]
    return Outcome(changed=len(repairs), changed_ids=sorted(repairs), findings=findings)


def _unchanged_since_checked(rule, repairs, plans, also) -> tuple[dict, dict]:
    """The repairs whose rows, locked now, still hold what the rule's check read (a row
    the application changed in between is left for the next run, so that a fix's
    `before` is exactly what it replaced), and what each held of the columns in `also`."""
    model = rule.model
    fields = sorted({field for pk in repairs for field in plans[pk].before} | set(also))
    rows = changes.locked_rows(model, repairs, fields)
    kept, held = {}, {}
    for pk, after in repairs.items():
        row = rows.get(pk)
        if row is not None and changes.same(model, plans[pk].before, row):
            kept[pk] = after
            held[pk] = {field: changes.as_json(row[field]) for field in also}
    return kept, held


def _holding(rule, repairs) -> dict:
    """The repairs whose rows hold their new values after the UPDATE."""
    fields = sorted({field for values in repairs.values() for field in values})
    rows = changes.locked_rows(rule.model, repairs, fields)
    return {
        pk: values
        for pk, values in repairs.items()
        if pk in rows and changes.same(rule.model, changes.values_as_json(values), rows[pk])
    }
