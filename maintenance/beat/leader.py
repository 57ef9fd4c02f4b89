"""One beat leads: it holds a row in the database and renews it; every other beat
stands by and takes the row over once the holder stops renewing (stopped, killed, its
host lost). Only the leader sends due tasks."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from maintenance import oneline
from maintenance.models import BeatLeader
from maintenance.outage import OUTAGE

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
        self._checked = float("-inf")  # monotonic time of the last answer from the database
        self._renewed = float("-inf")
        self._standing_by_for = ""

    def holds(self) -> bool:
        clock = time.monotonic()
        if clock - self._checked < self.check_every:
            return self.leading
        try:
            self.leading = self._take_or_renew()
            OUTAGE.answered()
            self._checked = clock
            if self.leading:
                self._renewed = clock
        except DatabaseError as error:
            # The leader keeps sending for as long as its hold lasts, then stops: a
            # standby that can reach the database may have taken over by then.
            self._checked = clock
            still = self.leading and clock - self._renewed < self.lease.total_seconds()
            if self.leading and not still:
                logger.warning(
                    "beat %s stops sending: cannot renew its lead (%s)",
                    self.me,
                    oneline.first_line(error),
                )
            self.leading = still
        return self.leading

    def release(self) -> None:
        """Hand the lead over at once (a clean shutdown), so a standby need not wait."""
        with contextlib.suppress(DatabaseError):
            BeatLeader.objects.filter(name=LOCK_NAME, holder=self.me).update(
                expires_at=timezone.now()
            )
        self.leading = False

    def _take_or_renew(self) -> bool:
        now = timezone.now()
        until = now + self.lease
        mine = BeatLeader.objects.filter(name=LOCK_NAME, holder=self.me)
        if mine.update(renewed_at=now, expires_at=until):
            return True
        current = BeatLeader.objects.filter(name=LOCK_NAME).first()
        if current is None:
            try:
                with transaction.atomic():
                    BeatLeader.objects.create(
                        name=LOCK_NAME,
                        holder=self.me,
                        acquired_at=now,
                        renewed_at=now,
                        expires_at=until,
                    )
            except IntegrityError:
                return False  # another beat started at the same moment and leads
            logger.info("beat %s leads (no beat led before)", self.me)
            return True
        if current.expires_at >= now:
            if self._standing_by_for != current.holder:
                self._standing_by_for = current.holder
                logger.info(
                    "beat %s stands by: beat %s leads (renewed %s)",
                    self.me,
                    current.holder,
                    current.renewed_at.isoformat(timespec="seconds"),
                )
            return False
        # Only if nobody renewed or took it since we looked: one standby wins.
        taken = BeatLeader.objects.filter(
            pk=current.pk, holder=current.holder, expires_at=current.expires_at
        ).update(holder=self.me, acquired_at=now, renewed_at=now, expires_at=until)
        if taken:
            logger.info(
                "beat %s takes over the lead from beat %s (not renewed since %s)",
                self.me,
                current.holder,
                current.renewed_at.isoformat(timespec="seconds"),
            )
        return bool(taken)
