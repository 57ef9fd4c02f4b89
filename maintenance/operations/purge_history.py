"""purge_history: delete the service's own history older than a cutoff: runs, with their
findings, batch log and partitions. The one operation that deletes, and it deletes only
maintenance records, never game data.

A run goes as a whole (its findings, batch log and partitions in the same batch) or
stays as a whole: a finding cannot outlive its run (Finding.run is CASCADE). A run's age
is its created_at. Kept however old, as decided at the purge's start (with the cutoff,
so a resumed purge deletes the same set):
- runs not finished (queued, running, paused, interrupted...);
- each operation's latest succeeded run and latest succeeded dry run: monitoring's last
  success (and the overdue check), the plan an operator may still apply;
- the runs holding findings still open: the latest complete validation as monitoring
  counts it, and per rule and scope the run the next check is compared with;
- failed runs a new trigger may still resume (MAINTENANCE_RESUME_WINDOW_HOURS);
- the run an unfinished run works on (the run_id of a revert_run or apply_run);
- the resume chain of every run that stays: a resumed run's findings and work are those
  of its whole chain, and resumed_from is SET_NULL, so deleting a link would cut it.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from maintenance.engine.findings_over_time import _scope, previous_run, resume_chain
from maintenance.engine.iteration import Batch, KeysetWalk
from maintenance.engine.states import FINISHED, Status
from maintenance.models import Finding, MaintenanceRun, RunBatch, RunPartition, TaskMessage
from maintenance.operations.base import Operation, Outcome, ParameterError
from maintenance.operations.common import cutoff_of, older_than_days
from maintenance.operations.registry import all_operations, register

# The pk of "the next run": created after every run there is (findings_over_time breaks
# ties of created_at by pk).
NEXT_RUN_PK = 2**63 - 1


@register
class PurgeHistory(Operation):
    name = "purge_history"
    description = "Delete run history older than older_than_days days, but not what is in use."
    parameters = (older_than_days("Delete run history older than this many days (default 90)."),)
    # Deleted history cannot be put back.
    revertable = False

    def prepare(self, params, now):
        cutoff = cutoff_of(params, now)
        keep = _candidates(cutoff).filter(pk__in=kept_runs(cutoff, now))
        return {"cutoff": cutoff.isoformat(), "keep": sorted(keep.values_list("pk", flat=True))}

    def walk(self, ctx):
        runs = _candidates(datetime.fromisoformat(ctx.prepared["cutoff"]))
        runs = runs.exclude(pk__in=ctx.prepared["keep"])
        if ctx.run_id is not None:
            runs = runs.exclude(pk=ctx.run_id)  # itself, should it be that old
        return RunsWithTheirRows(runs)

    def process(self, ctx, batch):
        doomed = _still_finished(batch.items, lock=not ctx.dry_run)
        if not ctx.dry_run:
            _delete(doomed)
        return Outcome(changed=len(doomed), changed_ids=doomed)


def _candidates(cutoff: datetime) -> QuerySet:
    return MaintenanceRun.objects.filter(created_at__lt=cutoff, status__in=FINISHED).order_by()


def _count_of(model) -> Coalesce:
    """How many rows of `model` belong to the run of the outer query."""
    rows = (
        model.objects.filter(run=OuterRef("pk"))
        .order_by()
        .values("run")
        .annotate(rows=Count("pk"))
        .values("rows")
    )
    return Coalesce(Subquery(rows), Value(0))


class RunsWithTheirRows(KeysetWalk):
    """Runs in id order, batched by the rows deleted with them: a batch of `size` holds
    runs whose own row, findings and batch log add up to at most `size` (one run at
    least). A validation with 40,000 findings is a batch of its own and a hundred empty
    runs share one, so batches take about the same time and stay within the statement
    timeout. The position is the last run's id."""

    def batch_after(self, position, size):
        weighed = list(
            self._after(position)
            .order_by("id")
            .annotate(rows=1 + _count_of(Finding) + _count_of(RunBatch))
            .values_list("id", "rows")[:size]
        )
        ids, rows = [], 0
        for run_id, weight in weighed:
            if ids and rows + weight > size:
                break
            ids.append(run_id)
            rows += weight
        return Batch(
            items=ids,
            processed=rows,
            position=ids[-1] if ids else position,
            done=len(ids) == len(weighed) < size,
        )

    def count_after(self, position):
        runs = self._after(position)
        children = (Finding.objects.filter(run__in=runs), RunBatch.objects.filter(run__in=runs))
        return runs.count() + sum(rows.count() for rows in children)


def _still_finished(ids: list[int], lock: bool) -> list[int]:
    """Those of `ids` still finished, locked until the batch commits: a failed run that
    was retried since the walk read it is live again and stays, and a retry that comes
    after waits for this batch, then finds no run to move."""
    runs = MaintenanceRun.objects.filter(pk__in=ids, status__in=FINISHED)
    if lock:
        runs = runs.select_for_update()
    return list(runs.order_by("pk").values_list("pk", flat=True))


def _delete(run_ids: list[int]) -> None:
    # The children first, each one set-based DELETE; the runs' own delete is then left
    # only to clear what other runs point at (skipped_because_of is SET_NULL).
    for model in (Finding, RunBatch, RunPartition, TaskMessage):
        model.objects.filter(run_id__in=run_ids).delete()
    MaintenanceRun.objects.filter(pk__in=run_ids).delete()


# --- what stays ---


def kept_runs(cutoff: datetime, now: datetime) -> set[int]:
    """The ids of the runs a purge at `now` with `cutoff` must leave (of any age)."""
    roots = (
        _unfinished()
        | _worked_on()
        | _last_successes()
        | _holding_open_findings(now)
        | _resumable_failures(now)
        | _resuming_older_runs(cutoff)
    )
    return _with_resume_chains(roots)


def _unfinished() -> set[int]:
    return set(MaintenanceRun.objects.exclude(status__in=FINISHED).values_list("pk", flat=True))


def _worked_on() -> set[int]:
    """The runs that unfinished runs work on: a paused revert must find its run."""
    params = MaintenanceRun.objects.exclude(status__in=FINISHED).values_list("params", flat=True)
    return {p["run_id"] for p in params if isinstance(p, dict) and type(p.get("run_id")) is int}


def _last_successes() -> set[int]:
    """Each operation's latest succeeded run, and latest succeeded dry run; latest as
    monitoring reads the last success: by finish."""
    succeeded = MaintenanceRun.objects.filter(status=Status.SUCCEEDED)
    newest = (F("finished_at").desc(nulls_last=True), "-created_at", "-pk")
    kinds = succeeded.order_by().values_list("operation", "dry_run").distinct()
    return {
        succeeded.filter(operation=operation, dry_run=dry_run)
        .order_by(*newest)
        .values_list("pk", flat=True)
        .first()
        for operation, dry_run in kinds
    }


def _holding_open_findings(now: datetime) -> set[int]:
    """The runs whose unfixed findings are still open: the latest complete validation
    (with its resume chain, as monitoring counts them), and for every rule and scope
    the run that the next run checking it will be compared with (findings over time)."""
    # Imported when used: monitoring imports the runner (through reporting), which
    # imports the operations.
    from maintenance import monitoring

    ids = set(monitoring.open_findings()["run_ids"])
    scopes = _scopes()
    for rule in _checked_rules():
        for scope in scopes:
            previous = previous_run(_next_run(now, scope), rule)
            if previous is not None:
                ids.add(previous.pk)
    return ids


def _rules_of(operation) -> list[str]:
    """The rules a run of `operation` checks with its defaults."""
    try:
        return operation.rules_checked(operation.clean({}).params)
    except ParameterError:
        return []  # it needs a parameter (a run id): no rules of its own


def _checked_rules() -> set[str]:
    return {rule for operation in all_operations() for rule in _rules_of(operation)}


def _scopes() -> set[int | None]:
    """Every scope (chronicle) a succeeded run checking rules had, and the whole."""
    checkers = [op.name for op in all_operations() if _rules_of(op)]
    runs = MaintenanceRun.objects.filter(status=Status.SUCCEEDED, operation__in=checkers)
    # The engine's own "the same rows".
    scopes = {_scope(run) for run in runs.only("params").iterator(chunk_size=500)}
    return {scope for scope in scopes if scope is None or type(scope) is int} | {None}


def _next_run(now: datetime, scope: int | None) -> MaintenanceRun:
    """A stand-in, never saved, for the next run over `scope`."""
    return MaintenanceRun(pk=NEXT_RUN_PK, created_at=now, params={"chronicle_id": scope})


def _resumable_failures(now: datetime) -> set[int]:
    """Failed runs recent enough for a new trigger to resume (the runner's window)."""
    window = timedelta(hours=settings.MAINTENANCE_RESUME_WINDOW_HOURS)
    failed = MaintenanceRun.objects.filter(status=Status.FAILED, created_at__gte=now - window)
    return set(failed.values_list("pk", flat=True))


def _resuming_older_runs(cutoff: datetime) -> set[int]:
    """Runs newer than the cutoff (they stay) that resumed from an older one."""
    resuming = MaintenanceRun.objects.filter(
        created_at__gte=cutoff, resumed_from__created_at__lt=cutoff
    )
    return set(resuming.values_list("pk", flat=True))


def _with_resume_chains(roots: set[int]) -> set[int]:
    kept = set(roots)
    resumed = MaintenanceRun.objects.filter(pk__in=roots, resumed_from__isnull=False)
    for run in resumed.only("pk"):
        kept.update(resume_chain(run))
    return kept
