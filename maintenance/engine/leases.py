"""Who may run an operation now: one active run per operation, held with a lease.

The database enforces the rule (a unique index on operation where the status is running,
pausing or cancelling); this module decides what a delivery does when another run holds
the operation: skip a fresh trigger while the holder's heartbeat is fresh, fail a dead
holder and take its work over, and put a resumed run back to wait its turn.
"""

from __future__ import annotations

import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from maintenance import operations
from maintenance.engine import events, partitions
from maintenance.engine.states import ACTIVE, Status
from maintenance.models import LeasedWork, MaintenanceRun, RunPartition
from maintenance.operations.registry import UnknownOperation

# Started and not finished, though no runner holds it right now.
UNDER_WAY = (Status.QUEUED, Status.INTERRUPTED, Status.PAUSED)


@dataclass
class Claim:
    token: str = ""  # the lease token, when the run is ours to execute

    @property
    def ok(self) -> bool:
        return bool(self.token)


def lease() -> timedelta:
    return timedelta(seconds=settings.MAINTENANCE_LEASE_SECONDS)


def is_dead(unit: LeasedWork, now: datetime | None = None) -> bool:
    """No sign of life within the lease. A partitioned run lives in its partitions: it
    is dead when none of them waits for a worker or works with a fresh heartbeat."""
    cutoff = (now or timezone.now()) - lease()
    if isinstance(unit, MaintenanceRun) and unit.is_partitioned:
        alive = Q(status__in=partitions.PENDING) | Q(status__in=ACTIVE, heartbeat_at__gte=cutoff)
        return not RunPartition.objects.filter(alive, run_id=unit.pk).exists()
    last_sign_of_life = unit.heartbeat_at or unit.started_at
    return last_sign_of_life is None or last_sign_of_life < cutoff


def _runs(unit: LeasedWork):
    return type(unit).objects.filter(pk=unit.pk)


def claim(run: LeasedWork, worker: str = "") -> Claim:
    """Make `run` the active run of its operation (for a partition: its run, then the
    partition itself). Returns a Claim; when it is not ok the run was skipped, deferred,
    given up, or is not this delivery's to run."""
    if isinstance(run, RunPartition):
        return _claim_partition(run, worker)
    run.refresh_from_db()
    if run.status in ACTIVE:
        # A partitioned run is held by its partitions, never by a runner of its own.
        return Claim() if run.is_partitioned else _reclaim(run, worker)
    if run.status != Status.QUEUED:
        return Claim()  # paused, cancelled, finished: a stale delivery has nothing to do
    if _given_up(run):
        return Claim()
    # One look at the operation's other runs: those holding it, and those under way.
    others = list(
        MaintenanceRun.objects.filter(
            Q(status__in=ACTIVE) | Q(status__in=UNDER_WAY) & _STARTED,
            operation=run.operation,
        )
        .exclude(pk=run.pk)
        .order_by("created_at", "pk")
    )
    if not _was_requeued(run) and _coalesced(run):
        return Claim()
    if not _was_requeued(run):
        # A fresh trigger also yields to a run of its operation that is between slices,
        # paused or waiting: it is already under way, and would only be done twice.
        started = next((other for other in others if other.status in UNDER_WAY), None)
        if started is not None:
            note = f"{run.operation} is under way as run #{started.pk} ({started.status})"
            if _runs(run).skip(started, note):
                events.note(run, "skipped", note)
            run.refresh_from_db()
            return Claim()
    holder = next((other for other in others if other.status in ACTIVE), None)
    for attempt in range(10):
        if attempt:  # the holder may have changed since the last look
            holder = (
                MaintenanceRun.objects.filter(operation=run.operation, status__in=ACTIVE)
                .exclude(pk=run.pk)
                .first()
            )
        if holder is not None:
            if not is_dead(holder):
                _wait_or_skip(run, holder)
                return Claim()
            _abandon(holder, taken_over_by=run)
            continue
        token = uuid.uuid4().hex
        # A savepoint only inside a caller's transaction: in autocommit the one UPDATE is
        # atomic anyway, and BEGIN/COMMIT would be two more round trips for every run.
        guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
        try:
            with guard:
                claimed = _runs(run).claim(token, worker)
        except IntegrityError:
            continue  # another trigger got there first: look at the holder again
        if not claimed:
            run.refresh_from_db()
            return Claim()
        # What the claim wrote and the runner reads (the rest it re-reads at the end).
        run.status, run.lease_token = Status.RUNNING, token
        return Claim(token)
    raise RuntimeError(f"could not settle who runs {run.operation}")


def _claim_partition(partition: RunPartition, worker: str) -> Claim:
    """A partition runs once its run holds the operation (the first partition to come
    claims it for all of them) and while the run is running."""
    partition.refresh_from_db()
    if partition.status in ACTIVE:
        return _reclaim(partition, worker)
    if partition.status != Status.QUEUED:
        return Claim()
    run = partition.run
    run.refresh_from_db()
    if run.status == Status.QUEUED:
        claim(run, worker)  # or skipped, or deferred while another run holds it
        run.refresh_from_db()
    if run.status != Status.RUNNING:
        partitions.settle(run.pk)  # a skipped or stopped run takes its partitions along
        partition.refresh_from_db()
        return Claim()
    if _given_up(partition):
        partitions.settle(run.pk)
        return Claim()
    token = uuid.uuid4().hex
    claimed = _runs(partition).claim(token, worker)
    partition.refresh_from_db()
    return Claim(token) if claimed else Claim()


def _coalesced(run: MaintenanceRun) -> bool:
    """A fresh trigger whose work a run of the same operation and parameters did after
    it was triggered (its duplicates queued behind it on one worker process, a second
    trigger while the first waited) is skipped, naming that run."""
    try:
        if not operations.get(run.operation).coalesces:
            return False
    except UnknownOperation:
        return False
    triggered = run.triggered_at or run.created_at
    done = (
        MaintenanceRun.objects.filter(
            operation=run.operation,
            status=Status.SUCCEEDED,
            dry_run=run.dry_run,
            finished_at__gte=triggered,
        )
        .exclude(pk=run.pk)
        .order_by("finished_at", "pk")
    )
    # Parameters compared as values: JSON key order differs between databases.
    same = next((other for other in done[:100] if other.params == run.params), None)
    if same is None:
        return False
    note = (
        f"coalesced: run #{same.pk} of {run.operation} with the same parameters "
        f"succeeded at {same.finished_at.isoformat(timespec='seconds')}, after this run "
        f"was triggered at {triggered.isoformat(timespec='seconds')}"
    )
    if _runs(run).skip(same, note):
        events.note(run, "coalesced", f"into run #{same.pk}")
    run.refresh_from_db()
    return True


def _given_up(run: LeasedWork) -> bool:
    """After MAINTENANCE_MAX_ATTEMPTS starts in a row without a committed batch, fail."""
    limit = settings.MAINTENANCE_MAX_ATTEMPTS
    if run.idle_attempts < limit:
        return False
    note = (
        f"gave up after {run.idle_attempts} attempts in a row without progress "
        f"(MAINTENANCE_MAX_ATTEMPTS={limit}); data is as of batch {run.batches}"
    )
    _runs(run).filter(idle_attempts__gte=limit).fail(note)
    run.refresh_from_db()
    return True


# Started once: a run writes its checkpoint when it starts, a partitioned run at its
# creation (its context and ranges), so for that one only a claim says it started.
_STARTED = Q(checkpoint__isnull=False) & (Q(partitions=1) | Q(attempts__gt=0))


def _was_requeued(run: MaintenanceRun) -> bool:
    """Resumed, re-queued after a slice, or sent again: not a fresh trigger."""
    started = run.attempts > 0 if run.is_partitioned else bool(run.checkpoint)
    # A message the sweeper sent again (resent_at) leaves a run that never started
    # fresh: duplicates that waited long behind a slow run still coalesce.
    return started or run.queued_at > run.created_at + timedelta(seconds=1)


def _wait_or_skip(run: MaintenanceRun, holder: MaintenanceRun) -> None:
    """A fresh trigger is skipped; a resumed or re-queued run waits its turn as
    interrupted, and the sweeper sends it again once the holder is gone."""
    note = f"{run.operation} is already running as run #{holder.pk}"
    if _was_requeued(run):
        if _runs(run).transition("defer", error=f"waiting: {note}"):
            events.note(run, "waits its turn", note)
    elif _runs(run).skip(holder, note):
        events.note(run, "skipped", note)
    run.refresh_from_db()


def _reclaim(run: LeasedWork, worker: str) -> Claim:
    """The same run delivered again (acks_late redelivery, or a message the sweeper sent
    again). Wait until the earlier attempt ends or its lease runs out, then take over."""
    deadline = time.monotonic() + settings.MAINTENANCE_LEASE_SECONDS + 5
    waiting = False
    while True:
        run.refresh_from_db()
        if run.status not in ACTIVE:
            return Claim()
        if is_dead(run):
            break
        if time.monotonic() > deadline:
            events.note(run, "left to its runner", "its lease stayed fresh")
            return Claim()
        if not waiting:
            waiting = True
            events.note(
                run,
                "delivered again while it runs",
                f"waiting for its lease (heartbeat {run.heartbeat_at}) to end or run out",
            )
        time.sleep(min(2.0, settings.MAINTENANCE_LEASE_SECONDS / 4))
    if run.status != Status.RUNNING or _given_up(run):
        # The operator's pause or cancel outlives the runner; a run that keeps dying
        # (a batch that kills its worker) stops being taken over.
        _expire(run)
        return Claim()
    token = uuid.uuid4().hex
    taken = _runs(run).take_over(run.lease_token, token, worker)
    run.refresh_from_db()
    if taken:
        events.note(run, "taken over", f"by {worker or 'this process'}: its lease ran out")
    return Claim(token) if taken else Claim()


def unchanged(run: LeasedWork):
    """The run, only if nobody has touched it since it was read (same lease token, same
    heartbeat): the guard of every move made on a run believed dead."""
    return type(run).objects.filter(
        pk=run.pk, lease_token=run.lease_token, heartbeat_at=run.heartbeat_at
    )


def expire_dead(run: LeasedWork) -> bool:
    """Interrupt a dead run or partition (pausing -> paused, cancelling -> cancelled),
    only if nobody has touched it since it was read. Says whether it moved."""
    note = (
        f"interrupted: no heartbeat since {run.heartbeat_at or run.started_at} "
        f"(lease {settings.MAINTENANCE_LEASE_SECONDS}s); data is as of batch {run.batches}"
    )
    moved = bool(unchanged(run).expire(note))
    if moved:
        events.note(run, "lease ran out", note)
        _settle_if_split(run)
    return moved


def _settle_if_split(unit: LeasedWork) -> None:
    if isinstance(unit, RunPartition):
        partitions.settle(unit.run_id)
    elif unit.is_partitioned:
        partitions.settle(unit.pk)


def _expire(run: LeasedWork) -> None:
    expire_dead(run)
    run.refresh_from_db()


def _abandon(holder: MaintenanceRun, taken_over_by: MaintenanceRun) -> None:
    """A dead holder, only if nobody has touched it since we looked: one the operator
    asked to pause or cancel becomes paused or cancelled; a running one fails and the
    new run resumes from its checkpoint."""
    if holder.status != Status.RUNNING:
        expire_dead(holder)
        return
    note = (
        f"abandoned: no heartbeat since {holder.heartbeat_at or holder.started_at} "
        f"(lease {settings.MAINTENANCE_LEASE_SECONDS}s); taken over by run #{taken_over_by.pk}"
    )
    if unchanged(holder).fail(note):
        events.note(holder, "abandoned", note)
        _settle_if_split(holder)
