"""Each due time of a maintenance schedule is sent once, whichever beat sends it.

Before sending, beat records the due time as a TaskMessage whose task id follows from
the schedule's name and the due time. A second beat, a restarted beat that lost its
last_run_at, or a beat catching up after a takeover finds the row and does not send;
while the database cannot be reached the task id still follows from the due time, so
the worker, which records one run per task id, makes one run of it."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from celery.schedules import schedule
from django.db import IntegrityError, transaction

from maintenance import oneline
from maintenance.beat import due
from maintenance.models import TaskMessage
from maintenance.outage import OUTAGE, OUTAGE_ERRORS

logger = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("6c3f3a52-8d0e-4b8f-9a59-2f1d3c5e7a10")
PREFIX = "maintenance."


@dataclass(frozen=True)
class Decision:
    send: bool
    task_id: str = ""
    due_at: datetime | None = None
    wait: timedelta = timedelta(0)  # when not sending: until the next due time


def task_id_for(schedule_name: str, due_at: datetime) -> str:
    # The same instant names the same message whatever zone a beat computed it in.
    moment = due_at.astimezone(UTC).isoformat()
    return str(uuid.uuid5(_NAMESPACE, f"{schedule_name}\n{moment}"))


def _last_sent(schedule_name: str) -> TaskMessage | None:
    return (
        TaskMessage.objects.filter(periodic_task_name=schedule_name, due_at__isnull=False)
        .order_by("-due_at")
        .first()
    )


def decide(schedule_name: str, task: str, entry_schedule, now: datetime, beat: str) -> Decision:
    """Record the due time `now` stands for and say whether to send it."""
    try:
        last = _last_sent(schedule_name)
    except OUTAGE_ERRORS as error:
        return _unrecorded(schedule_name, entry_schedule, now, error)
    due_at = due.due_time(entry_schedule, now, last.due_at if last else None)
    if due_at is None or (last is not None and last.due_at >= due_at):
        return _already(schedule_name, entry_schedule, now, last)
    task_id = task_id_for(schedule_name, due_at)
    try:
        with transaction.atomic():
            TaskMessage.objects.create(
                task_id=task_id,
                operation=task[len(PREFIX) :][:64],
                periodic_task_name=schedule_name[:200],
                due_at=due_at,
                sent_by=beat,
                sent_at=now,
            )
    except IntegrityError:
        sent = TaskMessage.objects.filter(task_id=task_id).first()
        return _already(schedule_name, entry_schedule, now, sent)
    except OUTAGE_ERRORS as error:
        return _unrecorded(schedule_name, entry_schedule, now, error)
    return Decision(send=True, task_id=task_id, due_at=due_at)


def _already(schedule_name, entry_schedule, now, sent: TaskMessage | None) -> Decision:
    wait = _until_next(entry_schedule, now, sent.due_at if sent else None)
    if sent is not None:
        logger.info(
            "beat skips %r: its due time %s was sent by beat %s at %s",
            schedule_name,
            sent.due_at.isoformat(timespec="seconds"),
            sent.sent_by or "?",
            sent.sent_at.isoformat(timespec="seconds"),
        )
    return Decision(send=False, wait=wait)


def unsent(decision: Decision) -> None:
    """The broker did not take the message: forget the record, so the due time is sent
    (by this beat's next try, or another beat) instead of counting as sent."""
    TaskMessage.objects.filter(task_id=decision.task_id, run__isnull=True).delete()


def _unrecorded(schedule_name, entry_schedule, now, error) -> Decision:
    OUTAGE.failed(error)
    due_at = due.due_time(entry_schedule, now, None) or now
    logger.warning(
        "beat sends %r due at %s unrecorded: the database is unreachable (%s); "
        "the worker makes one run of it when the database answers",
        schedule_name,
        due_at.isoformat(timespec="seconds"),
        oneline.first_line(error),
    )
    return Decision(send=True, task_id=task_id_for(schedule_name, due_at), due_at=due_at)


def _until_next(entry_schedule, now: datetime, last_due: datetime | None) -> timedelta:
    if last_due is not None and isinstance(entry_schedule, schedule):
        return max(last_due + entry_schedule.run_every - now, timedelta(seconds=1))
    try:
        return max(entry_schedule.remaining_estimate(now), timedelta(seconds=1))
    except Exception:  # solar without ephem, clocked in the past: look again soon
        return timedelta(seconds=5)
