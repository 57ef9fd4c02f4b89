"""Who may run an operation now: one running run per operation, with a lease.

The database enforces the rule (a unique index on operation where status is running);
this module decides what a trigger does when another run holds the operation: skip
while the holder's heartbeat is fresh, take over once it is older than the lease.
"""

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from maintenance.models import MaintenanceRun

RUNNING = MaintenanceRun.Status.RUNNING


@dataclass
class Claim:
    token: str = ""  # the lease token, when the run is ours to execute

    @property
    def ok(self):
        return bool(self.token)


def lease():
    return timedelta(seconds=settings.MAINTENANCE_LEASE_SECONDS)


def is_dead(run, now=None):
    last_sign_of_life = run.heartbeat_at or run.started_at
    return last_sign_of_life is None or last_sign_of_life < (now or timezone.now()) - lease()


def claim(run):
    """Make `run` the running run of its operation. Returns a Claim; when it is not ok,
    the run was recorded as skipped or had already finished."""
    if run.status == RUNNING:
        return _reclaim(run)
    if run.status != MaintenanceRun.Status.QUEUED:
        return Claim()  # finished already: a duplicate delivery has nothing to do
    for _ in range(10):
        holder = (
            MaintenanceRun.objects.filter(operation=run.operation, status=RUNNING)
            .exclude(pk=run.pk)
            .first()
        )
        if holder is not None:
            if not is_dead(holder):
                _skip(run, holder)
                return Claim()
            _abandon(holder, taken_over_by=run)
            continue
        token = uuid.uuid4().hex
        now = timezone.now()
        try:
            with transaction.atomic():
                claimed = MaintenanceRun.objects.filter(
                    pk=run.pk, status=MaintenanceRun.Status.QUEUED
                ).update(
                    status=RUNNING,
                    started_at=now,
                    heartbeat_at=now,
                    lease_token=token,
                    attempts=F("attempts") + 1,
                )
        except IntegrityError:
            continue  # another trigger got there first: look at the holder again
        run.refresh_from_db()
        return Claim(token) if claimed else Claim()
    raise RuntimeError(f"could not settle who runs {run.operation}")


def _reclaim(run):
    """The same run delivered again (acks_late redelivery or a retry). Wait until the
    earlier attempt is finished or its lease has run out, then take it over."""
    deadline = time.monotonic() + settings.MAINTENANCE_LEASE_SECONDS + 5
    while True:
        run.refresh_from_db()
        if run.status != RUNNING:
            return Claim()
        if is_dead(run):
            break
        if time.monotonic() > deadline:
            return Claim()
        time.sleep(min(2.0, settings.MAINTENANCE_LEASE_SECONDS / 4))
    token = uuid.uuid4().hex
    taken = MaintenanceRun.objects.filter(
        pk=run.pk, status=RUNNING, lease_token=run.lease_token
    ).update(lease_token=token, heartbeat_at=timezone.now(), attempts=F("attempts") + 1)
    run.refresh_from_db()
    return Claim(token) if taken else Claim()


def _skip(run, holder):
    now = timezone.now()
    MaintenanceRun.objects.filter(pk=run.pk).update(
        status=MaintenanceRun.Status.SKIPPED,
        skipped_because_of=holder,
        finished_at=now,
        error=f"{run.operation} is already running as run #{holder.pk}",
    )
    run.refresh_from_db()


def _abandon(holder, taken_over_by):
    """Fail a dead holder; only if nobody has touched it since we looked."""
    MaintenanceRun.objects.filter(
        pk=holder.pk, status=RUNNING, lease_token=holder.lease_token
    ).update(
        status=MaintenanceRun.Status.FAILED,
        finished_at=timezone.now(),
        lease_token="",
        error=(
            f"abandoned: no heartbeat since {holder.heartbeat_at or holder.started_at} "
            f"(lease {settings.MAINTENANCE_LEASE_SECONDS}s); "
            f"taken over by run #{taken_over_by.pk}"
        ),
    )
