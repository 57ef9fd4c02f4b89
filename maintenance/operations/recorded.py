"""What a finished run recorded, walked in batches: its findings and its batch log.
revert_run and apply_run walk another run's records with these."""

from __future__ import annotations

from django.db import connection
from django.db.models import Q, QuerySet, Sum

from maintenance.engine.findings_over_time import resume_chain
from maintenance.engine.iteration import Batch
from maintenance.engine.states import FINISHED, Status
from maintenance.models import Finding, MaintenanceRun, RunBatch
from maintenance.operations.base import Parameter, ParameterError
from maintenance.operations.changes import Change

FINDING_FIELDS = ("id", "rule", "model", "object_id", "before", "after", "also_written")


def source_run(run_id: int) -> MaintenanceRun:
    """The run referred to; locked while a new run that refers to it is recorded, so two
    reverts of one run recorded at the same moment cannot both pass the checks."""
    runs = MaintenanceRun.objects.filter(pk=run_id)
    if connection.in_atomic_block and connection.features.has_select_for_update:
        runs = runs.select_for_update()
    run = runs.first()
    if run is None:
        raise ParameterError(f"run_id: no run #{run_id}")
    return run


def chain_of(run_id: int) -> list[int]:
    """The run and the failed attempts it resumed from: together, what it did."""
    return resume_chain(source_run(run_id))


def refuse_unless_finished(run: MaintenanceRun, verb: str) -> None:
    if run.status not in FINISHED:
        raise ParameterError(
            f"run #{run.pk} is {run.status}: only a finished run can be {verb} "
            "(wait for it, or cancel it first)"
        )
    if run.status == Status.SKIPPED:
        raise ParameterError(f"run #{run.pk} was skipped: it did nothing to be {verb}")
    resumer = run.resumed_by.order_by("pk").first()
    if resumer is not None:
        raise ParameterError(
            f"run #{run.pk} was resumed by run #{resumer.pk}, which includes what it did: "
            f"use run #{resumer.pk}"
        )


def refuse_if_done_by(run: MaintenanceRun, operation: str, what: str) -> None:
    """Refuse a second revert (or apply) of the same run while one is under way or
    has succeeded."""
    earlier = (
        MaintenanceRun.objects.filter(operation=operation, params__run_id=run.pk, dry_run=False)
        .exclude(status__in=(Status.FAILED, Status.CANCELLED, Status.SKIPPED))
        .order_by("pk")
        .first()
    )
    if earlier is not None:
        raise ParameterError(f"run #{run.pk} was already {what} by run #{earlier.pk}")


def run_id_parameter(help_text: str, check) -> Parameter:
    return Parameter(
        "run_id", "int", help_text, minimum=1, maximum=2**63 - 1, required=True, check=check
    )


class FindingsWalk:
    """Findings of some runs, `size` at a time, by id (newest first when `newest_first`:
    a revert undoes a row's later change before its earlier one)."""

    def __init__(self, findings: QuerySet, newest_first: bool = False):
        self.findings = findings.order_by()
        self.newest_first = newest_first

    def _after(self, position):
        if position is None:
            return self.findings
        if self.newest_first:
            return self.findings.filter(id__lt=position)
        return self.findings.filter(id__gt=position)

    def batch_after(self, position, size):
        order = "-id" if self.newest_first else "id"
        rows = list(self._after(position).order_by(order).values(*FINDING_FIELDS)[:size])
        return Batch(
            items=rows,
            processed=len(rows),
            position=rows[-1]["id"] if rows else position,
            done=len(rows) < size,
        )

    def count_after(self, position):
        return self._after(position).count()


class BatchIdsWalk:
    """The ids in some runs' batch log (changed_ids), `size` at a time, each with what
    its batch wrote. The position is (batch log id, ids of it already taken)."""

    def __init__(self, batches: QuerySet):
        self.batches = batches.filter(changed__gt=0).order_by()

    def batch_after(self, position, size):
        batch_id, taken = position or (0, 0)
        items, position = [], [batch_id, taken]
        logged_rows = self.batches.filter(id__gte=batch_id).order_by("id")
        for logged in logged_rows.values("id", "changed_ids", "written").iterator(chunk_size=20):
            skip = taken if logged["id"] == batch_id else 0
            ids, room = logged["changed_ids"][skip:], size - len(items)
            items.extend((object_id, logged["written"]) for object_id in ids[:room])
            if len(ids) > room:  # the rest of this batch's ids are the next batch's
                return Batch(items, len(items), [logged["id"], skip + room], done=False)
            position = [logged["id"] + 1, 0]
            if len(items) == size:
                done = not self.batches.filter(id__gt=logged["id"]).exists()
                return Batch(items, len(items), position, done=done)
        return Batch(items, len(items), position, done=True)

    def count_after(self, position):
        batch_id, taken = position or (0, 0)
        later = self.batches.filter(id__gte=batch_id).aggregate(n=Sum("changed"))["n"] or 0
        return max(later - taken, 0)


def fixes_of(run_ids: list[int]) -> QuerySet:
    """The fixed findings: each a row a run changed, with its values before and after."""
    return Finding.objects.filter(run_id__in=run_ids, fixed=True, after__isnull=False)


def planned_fixes_of(run_ids: list[int]) -> QuerySet:
    """A dry run's plan: the findings it would have fixed."""
    return Finding.objects.filter(run_id__in=run_ids, fixed=False, after__isnull=False)


def batches_of(run_ids: list[int]) -> QuerySet:
    """The batches that wrote the same values to all their rows (archiving), and those
    an archive recorded before batches said what they wrote."""
    wrote = Q(written__isnull=False) | Q(run__operation="archive_old_scenes", run__dry_run=False)
    return RunBatch.objects.filter(wrote, run_id__in=run_ids)


def undo_of(finding: dict) -> Change:
    """The change that undoes a fixed finding: its before-values back where the row
    still holds its after-values (bookkeeping columns with them)."""
    after, before = dict(finding["after"]), finding["before"] or {}
    also = finding["also_written"] or {}
    expect = {**after, **(also.get("after") or {})}
    write = {field: before.get(field) for field in after} | (also.get("before") or {})
    return Change(finding["model"], finding["object_id"], expect, write, finding["rule"])


def redo_of(finding: dict) -> Change:
    """The change a planned finding describes: its after-values where the row still
    holds its before-values."""
    after, before = dict(finding["after"]), finding["before"] or {}
    expect = {field: before.get(field) for field in after}
    return Change(finding["model"], finding["object_id"], expect, after, finding["rule"])


def undo_of_batch_id(object_id: int, written: dict | None, source: str) -> Change | None:
    """The change that undoes an id of a batch that wrote `written` to all its rows;
    None for a batch recorded before batches said what they wrote."""
    if not written:
        return None
    return Change(written["model"], object_id, written["after"], written["before"], source)
