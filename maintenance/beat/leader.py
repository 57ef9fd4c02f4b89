"""One beat leads: it holds a row in the database and renews it; every other beat
stands by and takes the row over once the holder stops renewing (stopped, killed, its
host lost). Only the leader sends due tasks.

Every time on the row is the database's (Now()), so beats whose clocks disagree still
agree on when a hold runs out; this process's monotonic clock only bounds how long it
trusts its last renewal when the database does not answer."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now

from maintenance import oneline
from maintenance.models import BeatLeader
from maintenance.outage import OUTAGE, OUTAGE_ERRORS

logger = logging.getLogger(__name__)
LOCK_NAME = "beat"


def instance_name() -> str:
    """host:pid:id, unique per beat process (a restarted beat is a new instance)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:200]


class Leadership:
    """This process's hold on the leader row. `holds()` is asked before every tick and
    goes to the database at most every `lease_seconds / 3`."""

    def __init__(self, me: str, lease_seconds: float):
        self.me = me
        self.lease = timedelta(seconds=lease_seconds)
        self.check_every = max(lease_seconds / 3, 0.5)
        self.leading = False
        self._checked = float("-inf")  # monotonic time of the last look at the row
        self._renewed = float("-inf")  # ... and of the last renewal that succeeded
        self._standing_by_for = ""

    def _until(self) -> ExpressionWrapper:
        return ExpressionWrapper(Now() + self.lease, output_field=DateTimeField())

    def _trusted(self, clock: float) -> bool:
        """Our last renewal is still within the lease, by this process's own clock."""
        return clock - self._renewed < self.lease.total_seconds()

    def holds(self) -> bool:
        clock = time.monotonic()
        if clock - self._checked < self.check_every and (not self.leading or self._trusted(clock)):
            return self.leading
        self._checked = clock
        try:
            self.leading = self._take_or_renew()
        except DatabaseError as error:
            self._cannot_look(error, clock)
            return self.leading
        OUTAGE.answered()
        if self.leading:
            self._renewed = clock
        return self.leading

    def confirm(self) -> bool:
        """Right before recording a due time: still the holder, by the database's clock
        (a beat stopped with SIGSTOP past its lease must not send once it goes on)."""
        try:
            return BeatLeader.objects.filter(
                name=LOCK_NAME, holder=self.me, expires_at__gt=Now()
            ).exists()
        except DatabaseError:
            return self.leading and self._trusted(time.monotonic())

    def _cannot_look(self, error: DatabaseError, clock: float) -> None:
        # The leader keeps sending for as long as its hold lasts, then stops: a standby
        # that can reach the database may have taken over by then.
        if isinstance(error, OUTAGE_ERRORS):
            OUTAGE.failed(error)
        still = self.leading and self._trusted(clock)
        if self.leading and not still:
            said = "stops sending: its lead ran out unrenewed"
        elif self.leading:
            said = "cannot renew its lead; sends on while it lasts"
        else:
            said = "stands by: cannot read the leader row"
        logger.warning("beat %s %s (%s)", self.me, said, oneline.first_line(error))
        self.leading = still

    def release(self) -> None:
        """Hand the lead over at once (a clean shutdown), so a standby need not wait."""
        with contextlib.suppress(DatabaseError):
            BeatLeader.objects.filter(name=LOCK_NAME, holder=self.me).update(expires_at=Now())
        self.leading = False

    def _take_or_renew(self) -> bool:
        until = self._until()
        mine = BeatLeader.objects.filter(name=LOCK_NAME, holder=self.me)
        if mine.update(renewed_at=Now(), expires_at=until):
            return True
        current = BeatLeader.objects.filter(name=LOCK_NAME).first()
        if current is None:
            return self._first_to_lead()
        # Only if it ran out by the database's clock and the same beat still holds it:
        # a renewal or another standby's takeover since we looked makes this match
        # nothing, so one standby wins.
        taken = BeatLeader.objects.filter(
            pk=current.pk, holder=current.holder, expires_at__lte=Now()
        ).update(holder=self.me, acquired_at=Now(), renewed_at=Now(), expires_at=until)
        if taken:
            logger.info(
                "beat %s takes over the lead from beat %s (not renewed since %s)",
                self.me,
                current.holder,
                current.renewed_at.isoformat(timespec="seconds"),
            )
            return True
        if self._standing_by_for != current.holder:
            self._standing_by_for = current.holder
            logger.info(
                "beat %s stands by: beat %s leads (renewed %s)",
                self.me,
                current.holder,
                current.renewed_at.isoformat(timespec="seconds"),
            )
        return False

    def _first_to_lead(self) -> bool:
        try:
            with transaction.atomic():
                BeatLeader.objects.create(
                    name=LOCK_NAME,
                    holder=self.me,
                    acquired_at=Now(),
                    renewed_at=Now(),
                    expires_at=self._until(),
                )
        except IntegrityError:
            return False  # another beat started at the same moment and leads
        logger.info("beat %s leads (no beat led before)", self.me)
        return True
