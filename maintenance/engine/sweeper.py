"""The sweeper keeps runs moving with nobody watching. It runs inside the every-minute
heartbeat task:

- a run whose lease expired (its worker was killed, its machine lost) becomes
  `interrupted` (or `paused` / `cancelled` if the operator had asked for that);
- an interrupted run is resumed and sent again, once no other run holds its operation;
- a queued run whose message was lost (queued longer than
  MAINTENANCE_REQUEUE_AFTER_SECONDS, never started) is sent again.

Every move is a conditional transition, so two sweepers, or a sweeper racing a worker
that takes the run over, can never both act on one run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from maintenance import operations
from maintenance.engine import leases, partitions
from maintenance.engine.states import ACTIVE, Status
from maintenance.models import LeasedWork, MaintenanceRun, RunPartition
from maintenance.operations.registry import UnknownOperation

logger = logging.getLogger(__name__)


@dataclass
class Sweep:
    expired: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)


def sweep(send: Callable[[MaintenanceRun], None], now: datetime | None = None) -> Sweep:
    now = now or timezone.now()
    done = Sweep()
    _expire_dead(now, done)
    _requeue_interrupted(send, done)
    _resend_lost(send, now, done)
    if done.expired or done.requeued or done.resent:
        logger.warning("sweeper: %s", done)
    return done


def _dead(model, cutoff):
    return model.objects.filter(status__in=ACTIVE).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )


def _expire_dead(now: datetime, done: Sweep) -> None:
    cutoff = now - leases.lease()
    # A partitioned run lives in its partitions: they expire, and the run follows.
    for run in _dead(MaintenanceRun, cutoff).filter(partitions=1):
        if leases.expire_dead(run):
            done.expired.append(run.pk)
    for partition in _dead(RunPartition, cutoff).select_related("run"):
        if leases.expire_dead(partition):
            done.expired.append(partition.run_id)
    # A settle lost with a dying process: partitioned runs whose partitions are at rest.
    for run_id in MaintenanceRun.objects.filter(status__in=ACTIVE, partitions__gt=1).values_list(
        "pk", flat=True
    ):
        partitions.settle(run_id)


def _requeue_interrupted(send: Callable[[MaintenanceRun], None], done: Sweep) -> None:
    # Partitions of a running run that gave their worker back or lost it: go on.
    interrupted = RunPartition.objects.filter(
        status=Status.INTERRUPTED, run__status=Status.RUNNING
    ).select_related("run")
    for partition in interrupted:
        if RunPartition.objects.filter(pk=partition.pk).requeue():
            _send(send, partition)
            done.requeued.append(partition.run_id)
    busy = set(MaintenanceRun.objects.filter(status__in=ACTIVE).values_list("operation", flat=True))
    for run in MaintenanceRun.objects.filter(status=Status.INTERRUPTED).order_by("created_at"):
        if run.operation in busy:
            continue  # it would only be deferred again
        if MaintenanceRun.objects.filter(pk=run.pk).requeue():
            busy.add(run.operation)
            _send(send, run)
            done.requeued.append(run.pk)


def _resend_lost(send: Callable[[MaintenanceRun], None], now: datetime, done: Sweep) -> None:
    cutoff = now - timedelta(seconds=settings.MAINTENANCE_REQUEUE_AFTER_SECONDS)
    last_sent = Q(resent_at__lt=cutoff) | Q(resent_at__isnull=True, queued_at__lt=cutoff)
    lost_runs = MaintenanceRun.objects.filter(last_sent, status=Status.QUEUED)
    lost_partitions = RunPartition.objects.filter(
        last_sent, status=Status.QUEUED, run__status=Status.RUNNING
    ).select_related("run")
    for unit in [*lost_runs, *lost_partitions]:
        # Stamp the re-sending first and only if nobody did since: one sweeper sends it.
        if (
            type(unit)
            .objects.filter(pk=unit.pk, status=Status.QUEUED, resent_at=unit.resent_at)
            .update(resent_at=now)
        ):
            _send(send, unit)
            done.resent.append(getattr(unit, "run_id", unit.pk))


def _send(send: Callable[[LeasedWork], None], run: LeasedWork) -> None:
    try:
        operations.get(run.operation)
    except UnknownOperation:  # removed by a deploy: no worker can run it
        type(run).objects.filter(pk=run.pk).fail(
            f"the operation {run.operation!r} no longer exists; nothing more can be done"
        )
        return
    try:
        send(run)
    except Exception:  # the broker is down: the next sweep tries again
        logger.exception("sweeper could not send run #%s", run.pk)
