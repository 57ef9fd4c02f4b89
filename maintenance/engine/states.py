"""The run's state machine: every status a run can have and every allowed move.

One table says which transition moves which status to which; `RunQuerySet` turns each
transition into a single conditional UPDATE that reports whether it won. Nothing else
in the project writes `MaintenanceRun.status` (tests/test_run_states.py checks that).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Case, F, Value, When
from django.utils import timezone


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


# A runner is working on the run: these hold the operation and renew the lease.
ACTIVE = (Status.RUNNING, Status.PAUSING, Status.CANCELLING)
# Nothing will ever happen to the run again.
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.SKIPPED, Status.CANCELLED)
# No runner holds the run: the lease token is cleared on entering these.
AT_REST = (*FINISHED, Status.QUEUED, Status.PAUSED, Status.INTERRUPTED)

# transition -> {from status: to status}
TRANSITIONS: dict[str, dict[str, str]] = {
    # a runner takes a queued run
    "claim": {Status.QUEUED: Status.RUNNING},
    # a trigger found the operation held by another run
    "skip": {Status.QUEUED: Status.SKIPPED},
    # a resumed run found the operation held: it waits its turn, the sweeper sends it again
    "defer": {Status.QUEUED: Status.INTERRUPTED},
    # operator: stop at once when nothing runs it, else at the next batch boundary
    "pause": {
        Status.QUEUED: Status.PAUSED,
        Status.INTERRUPTED: Status.PAUSED,
        Status.RUNNING: Status.PAUSING,
    },
    # operator: a paused or interrupted run goes back on the queue
    "resume": {Status.PAUSED: Status.QUEUED, Status.INTERRUPTED: Status.QUEUED},
    # the runner or the sweeper: an interrupted run back on the queue (never a paused one:
    # an operator's pause that lands in between wins)
    "requeue": {Status.INTERRUPTED: Status.QUEUED},
    "cancel": {
        Status.QUEUED: Status.CANCELLED,
        Status.PAUSED: Status.CANCELLED,
        Status.INTERRUPTED: Status.CANCELLED,
        Status.RUNNING: Status.CANCELLING,
        Status.PAUSING: Status.CANCELLING,
    },
    # the runner stops at a batch boundary: what the operator asked, or its slice is up
    "stop": {
        Status.PAUSING: Status.PAUSED,
        Status.CANCELLING: Status.CANCELLED,
        Status.RUNNING: Status.INTERRUPTED,
    },
    # the sweeper: the runner died (its lease expired); the operator's wish still holds
    "expire": {
        Status.RUNNING: Status.INTERRUPTED,
        Status.PAUSING: Status.PAUSED,
        Status.CANCELLING: Status.CANCELLED,
    },
    # operator: a failed partition (or the partitioned run it failed) goes back on the
    # queue from its checkpoint; the partitions that succeeded stay as they are
    "retry": {Status.FAILED: Status.QUEUED},
    "succeed": {s: Status.SUCCEEDED for s in ACTIVE},
    "fail": {s: Status.FAILED for s in (*ACTIVE, Status.QUEUED, Status.INTERRUPTED)},
}

# What an operator may ask, and the statuses that allow it (for one-line refusals).
OPERATOR_ACTIONS = ("pause", "resume", "cancel")


def allowed_from(transition: str) -> tuple[str, ...]:
    return tuple(TRANSITIONS[transition])


def _status_after(moves: dict[str, str]):
    targets = set(moves.values())
    if len(targets) == 1:
        return Value(targets.pop())
    return Case(
        *(When(status=source, then=Value(target)) for source, target in moves.items()),
        output_field=models.CharField(),
    )


def _when_entering(moves: dict[str, str], statuses, value, field: str):
    """`value` for rows whose move ends in one of `statuses`, the field unchanged else."""
    sources = [source for source, target in moves.items() if target in statuses]
    if not sources:
        return None
    if len(sources) == len(moves):
        return value
    return Case(When(status__in=sources, then=value), default=F(field))


class RunQuerySet(models.QuerySet):
    """One method per transition; each is one UPDATE guarded by the allowed statuses
    (and, for a runner, its lease token) and returns how many runs moved."""

    def transition(self, name: str, *, token: str | None = None, **fields) -> int:
        moves = TRANSITIONS[name]
        rows = self.filter(status__in=list(moves))
        if token is not None:
            rows = rows.filter(lease_token=token)
        now = timezone.now()
        changes = {"status": _status_after(moves), **fields}
        finished_at = _when_entering(moves, FINISHED, Value(now), "finished_at")
        if finished_at is not None:
            changes.setdefault("finished_at", finished_at)
        released = _when_entering(moves, AT_REST, Value(""), "lease_token")
        if released is not None:
            changes.setdefault("lease_token", released)
        return rows.update(**changes)

    def claim(self, token: str, worker: str = "") -> int:
        now = timezone.now()
        return self.transition(
            "claim",
            lease_token=token,
            started_at=Case(
                When(started_at__isnull=True, then=Value(now)), default=F("started_at")
            ),
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            idle_attempts=F("idle_attempts") + 1,
            stop_requested=False,
            worker=worker[:255],
        )

    def take_over(self, old_token: str, token: str, worker: str = "") -> int:
        """Not a status change: a new runner takes the lease of a dead one."""
        return self.filter(status__in=ACTIVE, lease_token=old_token).update(
            lease_token=token,
            heartbeat_at=timezone.now(),
            attempts=F("attempts") + 1,
            idle_attempts=F("idle_attempts") + 1,
            stop_requested=False,
            worker=worker[:255],
        )

    def skip(self, holder, error: str) -> int:
        return self.transition("skip", skipped_because_of=holder, error=error)

    def pause(self) -> int:
        return self.transition("pause")

    def resume(self) -> int:
        return self.transition("resume", queued_at=timezone.now(), resent_at=None, error="")

    def retry(self) -> int:
        return self.transition(
            "retry", queued_at=timezone.now(), resent_at=None, finished_at=None, error=""
        )

    def requeue(self) -> int:
        return self.transition("requeue", queued_at=timezone.now(), resent_at=None)

    def cancel(self) -> int:
        return self.transition("cancel")

    def stop(self, token: str, note: str = "") -> int:
        return self.transition("stop", token=token, error=note, heartbeat_at=timezone.now())

    def expire(self, note: str) -> int:
        return self.transition("expire", error=note)

    def succeed(self, token: str) -> int:
        return self.transition("succeed", token=token, heartbeat_at=timezone.now(), error="")

    def fail(self, error: str, token: str | None = None) -> int:
        return self.transition("fail", token=token, error=error)
