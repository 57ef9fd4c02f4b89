"""Partitions: one run split over many workers, and the fan-in through the database.

`--partitions N` splits the key space of each of the operation's walks into N contiguous
id ranges when the run is created, one `RunPartition` each. A partition is worked like a
run (its own task, lease, checkpoint, slices, throttling); the run itself holds the
operation (one active run per operation) and carries the sums of its partitions'
counters. Its status follows theirs, and `settle` is the one place that moves it: after
any partition moves, whoever moved it settles the run.
"""

from __future__ import annotations

import logging
from collections import Counter

from django.db import transaction
from django.utils import timezone

from maintenance.engine import findings_over_time
from maintenance.engine.iteration import WHOLE, Range
from maintenance.engine.states import ACTIVE, FINISHED, Status
from maintenance.models import MaintenanceRun, RunPartition

logger = logging.getLogger(__name__)

# Work still to do in a partition that no runner holds right now.
PENDING = (Status.QUEUED, Status.INTERRUPTED)


def split(key_range: Range, parts: int) -> list[Range]:
    """`parts` contiguous ranges covering all ids: the first open below, the last open
    above (rows inserted while the run works are still someone's), the rest of equal
    width over the ids that exist at the start."""
    lower, upper = key_range
    if lower is None or upper is None:  # an empty table: the first partition takes all
        return [WHOLE] + [(1, 0)] * (parts - 1)
    width = upper - lower + 1
    edges = [lower + width * k // parts for k in range(parts + 1)]
    return [
        (None if k == 0 else edges[k], None if k == parts - 1 else edges[k + 1] - 1)
        for k in range(parts)
    ]


def create(run: MaintenanceRun, operation, context) -> list[RunPartition]:
    """The partitions of a new run, their ranges fixed now, from the key ranges of the
    walks as the run's context (e.g. its cutoff) sees them."""
    prepared = context.prepared
    per_walk = {
        name: split(key_range, run.partitions)
        for name, key_range in operation.key_ranges(context).items()
    }
    first = next(iter(per_walk.values()))
    checkpoint = {"context": prepared, "position": None, "done": False}
    return RunPartition.objects.bulk_create(
        [
            RunPartition(
                run=run,
                number=k + 1,
                lower_id=first[k][0],
                upper_id=first[k][1],
                bounds={name: list(ranges[k]) for name, ranges in per_walk.items()},
                checkpoint=checkpoint,
                queued_at=run.queued_at,
            )
            for k in range(run.partitions)
        ]
    )


def of(run: MaintenanceRun):
    return RunPartition.objects.filter(run_id=run.pk).order_by("number")


def settle(run_id: int) -> MaintenanceRun:
    """Move a partitioned run to where its partitions are: running while any of them
    works or waits for a worker, and once none does, succeeded (all succeeded), failed
    (one failed), paused or cancelled (as the operator asked). A run that ended
    otherwise (skipped, failed to enqueue, cancelled) takes its idle partitions with it.
    Every move is a conditional transition: settling twice, or racing, is harmless."""
    with transaction.atomic():
        run = MaintenanceRun.objects.select_for_update().get(pk=run_id)
        _settle(run)
    run.refresh_from_db()
    return run


def _settle(run: MaintenanceRun) -> None:
    runs = MaintenanceRun.objects.filter(pk=run.pk)
    partitions = RunPartition.objects.filter(run_id=run.pk)
    if run.status in FINISHED:
        idle = partitions.filter(status__in=(*PENDING, Status.PAUSED))
        idle.transition("cancel", error=f"the run is {run.status}")
        return
    if run.status in (Status.PAUSING, Status.PAUSED):
        partitions.filter(status__in=PENDING).pause()
    elif run.status == Status.CANCELLING:
        partitions.filter(status__in=(*PENDING, Status.PAUSED)).cancel()
    statuses = Counter(partitions.values_list("status", flat=True))
    if run.status not in ACTIVE or any(statuses[s] for s in (*ACTIVE, *PENDING)):
        return  # still working, or waiting for workers, or not started yet
    failed = list(partitions.filter(status=Status.FAILED).values_list("number", "error"))
    note = _note(failed)
    if statuses[Status.SUCCEEDED] == sum(statuses.values()):
        if runs.transition("succeed", heartbeat_at=timezone.now(), error=""):
            findings_over_time.summarise(run.pk)
    elif failed and run.status == Status.RUNNING:
        runs.fail(note)
    else:
        # Paused or cancelled as the operator asked; a running run whose partitions all
        # came to rest unfinished was stopped under it, so it is paused.
        if run.status == Status.RUNNING:
            runs.pause()
        runs.transition("stop", error=note, heartbeat_at=timezone.now())
    logger.info("run #%s settled from partitions %s", run.pk, dict(statuses))


def _note(failed: list[tuple[int, str]]) -> str:
    if not failed:
        return ""
    which = "; ".join(f"partition {number}: {error}" for number, error in failed[:5])
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    resume = "resume the run to retry the failed partitions alone"
    return f"{len(failed)} partition(s) failed ({which}{more}); {resume}"[:2000]
