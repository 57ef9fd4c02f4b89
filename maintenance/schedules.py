"""The default schedules, seeded into django-celery-beat without ever overwriting what
an admin has edited, and reading an operation's schedule back for monitoring."""

import contextlib
import copy
import json
import logging
import time
from dataclasses import dataclass, field

from celery.schedules import schedstate
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from maintenance import oneline
from maintenance.beat import leader, sends
from maintenance.engine.runs import cut_error
from maintenance.models import ScheduleChange
from maintenance.outage import quiet_outages_of

MAINTENANCE_PREFIX = "maintenance."
# A beat message whose schedule text could not be read carries the reason under this
# kwarg; the task turns it into a failed run instead of beat disabling the schedule.
SCHEDULE_ERROR_KWARG = "maintenance_schedule_error"
# Headers beat adds to a maintenance message: which beat sent it, for which due time.
SENT_BY_HEADER = "maintenance_sent_by"
DUE_AT_HEADER = "maintenance_due_at"
UNRECORDED_TASKS = ("maintenance.heartbeat", "maintenance.ping")
# A due task the broker did not take is tried again this often.
SEND_RETRY_SECONDS = 5.0
logger = logging.getLogger(__name__)
# django-celery-beat logs each database error of its scheduler with a traceback.
quiet_outages_of("django_celery_beat.schedulers", "celery.beat")


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    description: str
    crontab: dict | None = None  # minute/hour (day_of_week: every day), in settings.TIME_ZONE
    every_seconds: int | None = None
    kwargs: dict = field(default_factory=dict)


DEFAULT_SCHEDULES = (
    DefaultSchedule(
        name="Validate data integrity (daily)",
        task="maintenance.validate_data_integrity",
        description='Report integrity problems every night; add "fix": true to repair them.',
        crontab={"minute": "0", "hour": "3"},
    ),
    DefaultSchedule(
        name="Recalculate XP (daily)",
        task="maintenance.recalculate_xp",
        description="Set every character's xp to its ledger sum.",
        crontab={"minute": "30", "hour": "3"},
    ),
    DefaultSchedule(
        name="Archive old scenes (daily)",
        task="maintenance.archive_old_scenes",
        description="Archive finished scenes with no activity for 90 days.",
        crontab={"minute": "0", "hour": "4"},
        kwargs={"older_than_days": 90},
    ),
    DefaultSchedule(
        name="Purge run history (weekly)",
        task="maintenance.purge_history",
        description="Delete runs and findings older than 90 days, keeping what is in use.",
        crontab={"minute": "30", "hour": "4", "day_of_week": "0"},  # Sunday
        kwargs={"older_than_days": 90},
    ),
    DefaultSchedule(
        name="Heartbeat (every minute)",
        task="maintenance.heartbeat",
        description="Proves that beat and a worker are alive; monitor_validation reads it.",
        every_seconds=60,
    ),
)


def _schedule_fields(default):
    if default.every_seconds:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=default.every_seconds, period=IntervalSchedule.SECONDS
        )
        return {"interval": interval}
    # A row of its own, never one found by its fields: celery.backend_cleanup's 04:00
    # row (or anyone's) would be re-timed along with it when either is edited.
    crontab = CrontabSchedule.objects.create(
        minute=default.crontab["minute"],
        hour=default.crontab["hour"],
        day_of_week=default.crontab.get("day_of_week", "*"),
        day_of_month="*",
        month_of_year="*",
        timezone=settings.TIME_ZONE,
    )
    return {"crontab": crontab}


def seed():
    """Create the default schedules that do not exist yet, by name. Returns
    [(name, created)]; an existing schedule is kept exactly as it is."""
    outcome = []
    with transaction.atomic():
        for default in DEFAULT_SCHEDULES:
            if PeriodicTask.objects.filter(name=default.name).exists():
                outcome.append((default.name, False))
                continue
            PeriodicTask.objects.create(
                name=default.name,
                task=default.task,
                kwargs=json.dumps(default.kwargs),
                description=default.description,
                **_schedule_fields(default),
            )
            outcome.append((default.name, True))
    return outcome


def enabled_schedules(task_name):
    return list(
        PeriodicTask.objects.filter(task=task_name, enabled=True).select_related(
            "interval", "crontab", "solar", "clocked"
        )
    )


class ScheduleArgumentsError(ValueError):
    """A schedule's args or kwargs text that a maintenance task cannot take."""


def load_json(text: str, what: str, kind: type):
    try:
        value = json.loads(text)
    except RecursionError:
        raise ScheduleArgumentsError(f"{what} is nested too deeply to read") from None
    except ValueError as error:  # also int-digit limits
        raise ScheduleArgumentsError(cut_error(f"{what} is not JSON: {error}")) from None
    if not isinstance(value, kind):
        raise ScheduleArgumentsError(
            f"{what} must be a JSON {'object' if kind is dict else 'array'}, "
            f"not {type(value).__name__}"
        )
    return value


def schedule_arguments(args_text: str | None, kwargs_text: str | None) -> tuple[list, dict]:
    """The (args, kwargs) a schedule's text stands for, or ScheduleArgumentsError."""
    args = load_json(args_text or "[]", "args", list)
    kwargs = load_json(kwargs_text or "{}", "kwargs", dict)
    return args, kwargs


def record_change(periodic_task: PeriodicTask, username: str) -> None:
    """Remember who changed a schedule through the admin, for the runs it starts."""
    ScheduleChange.objects.update_or_create(
        periodic_task=periodic_task,
        defaults={"changed_by": username[:150], "changed_at": timezone.now()},
    )


def last_changed_by(periodic_task_name: str) -> str:
    change = ScheduleChange.objects.filter(periodic_task__name=periodic_task_name).first()
    return change.changed_by if change else ScheduleChange.NOBODY


class MaintenanceEntry(ModelEntry):
    """django-celery-beat's entry, except that a maintenance schedule whose args or
    kwargs cannot be read is not silently disabled (nor, for nesting too deep for json,
    a crash of beat): it sends the reason, and the task records a failed run."""

    def __init__(self, model, app=None):
        problem = None
        given = model
        if (model.task or "").startswith(MAINTENANCE_PREFIX):
            try:
                schedule_arguments(model.args, model.kwargs)
                load_json(model.headers or "{}", "headers", dict)
            except ScheduleArgumentsError as error:
                problem = str(error)
                # The parent parses a copy with empty arguments; the row keeps its text.
                model = copy.copy(model)
                model.args, model.kwargs, model.headers = "[]", "{}", "{}"
        self.model = given  # for _disable, which the parent may call while it reads
        super().__init__(model, app=app)
        self.model = given
        if problem is not None:
            self.kwargs = {SCHEDULE_ERROR_KWARG: problem}

    def _disable(self, model):
        # Disable the row itself, never the copy with emptied arguments.
        super()._disable(self.model)


class MaintenanceScheduler(DatabaseScheduler):
    """The DatabaseScheduler with MaintenanceEntry, made safe to run twice. Beat starts
    it through CELERY_BEAT_SCHEDULER (or --scheduler
    maintenance.schedules:MaintenanceScheduler).

    - Only the beat that holds the leader row sends (beat/leader.py); others stand by.
    - A maintenance run's due time is recorded before it is sent (beat/sends.py), so it
      is sent once: by one beat, and not again by a restarted or new leader.
    - Each message names the beat that sent it and its due time; the run records both.
    - A database outage is one line per failed attempt, never a crash of beat."""

    Entry = MaintenanceEntry

    def __init__(self, *args, **kwargs):
        self.instance = leader.instance_name()
        self.leadership = leader.Leadership(self.instance, settings.MAINTENANCE_BEAT_LEASE_SECONDS)
        self._decided: dict[str, sends.Decision] = {}
        self._send_failed_at: dict[str, float] = {}  # monotonic time, by entry name
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):
        was_leading = self.leadership.leading
        if not self.leadership.holds():
            return min(self.leadership.check_every, self.max_interval)
        if not was_leading:
            # Read the schedule afresh: the last leader's last_run_at and any edits.
            self._initial_read, self._heap = True, None
        # Wake in time to renew the lead, however far off the next due task is.
        return min(super().tick(*args, **kwargs), self.leadership.check_every)

    def is_due(self, entry):
        state = super().is_due(entry)
        if not state.is_due or not sends_once(entry.task):
            return state
        failed_at = self._send_failed_at.get(entry.name)
        if failed_at is not None and time.monotonic() - failed_at < SEND_RETRY_SECONDS:
            return schedstate(False, SEND_RETRY_SECONDS)
        if not self.leadership.confirm():
            self.leadership.leading = False  # the next tick looks again
            return schedstate(False, self.leadership.check_every)
        decision = sends.decide(
            entry.name, entry.task, entry.schedule, timezone.now(), self.instance
        )
        if not decision.send:
            return schedstate(False, decision.wait.total_seconds())
        self._decided[entry.name] = decision
        return state

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        decision = self._decided.pop(entry.name, None)
        if decision is None:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        given = entry.options
        headers = {
            **(given.get("headers") or {}),
            SENT_BY_HEADER: self.instance,
            DUE_AT_HEADER: decision.due_at.isoformat(),
        }
        # This sending only (beat is one thread): the due time's task id and headers,
        # and no time limits, for the worker's own apply.
        entry.options = {
            **given,
            "task_id": decision.task_id,
            "headers": headers,
            "time_limit": None,
            "soft_time_limit": None,
        }
        try:
            sent = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except Exception as error:  # the broker did not take it: the due time is not sent
            self._send_again_soon(entry, decision, error)
            return None
        finally:
            entry.options = given
        self._send_failed_at.pop(entry.name, None)
        return sent

    def _send_again_soon(self, entry, decision: sends.Decision, error: Exception) -> None:
        """Forget the record of the due time and make the entry due again, so the next
        tick tries again: one line per try, until the broker takes it."""
        # If the record cannot be forgotten, the task id still follows from the due
        # time: the workers make one run of it once it is sent.
        with contextlib.suppress(DatabaseError):
            sends.unsent(decision)
        self._send_failed_at[entry.name] = time.monotonic()
        current = (self._schedule or {}).get(entry.name)
        if current is not None:
            current.last_run_at = current.model.last_run_at = entry.last_run_at
        self._heap = None  # rebuilt from the schedule at the next tick
        logger.warning(
            "beat could not send %r due at %s, tries again: %s",
            entry.name,
            decision.due_at.isoformat(timespec="seconds"),
            oneline.describe(getattr(error, "__cause__", None) or error),
        )

    def install_default_entries(self, data):
        super().install_default_entries(data)
        # django-celery-beat has just linked celery.backend_cleanup (04:00) to any 04:00
        # row, the archive schedule's too: give it one of its own again.
        from maintenance.crontab_rows import keep_others_apart  # it imports this module

        try:
            moved = keep_others_apart()
        except DatabaseError as error:
            logger.warning("beat could not check crontab rows: %s", oneline.first_line(error))
            return
        for name in moved:
            logger.info("beat put %r on a crontab row no maintenance schedule uses", name)

    def all_as_schedule(self):
        try:
            return super().all_as_schedule()
        except DatabaseError as error:
            logger.warning(
                "beat keeps its schedule: the database is unreachable (%s)",
                oneline.first_line(error),
            )
            if self._schedule is None:
                self._initial_read = True  # read it as soon as the database answers
            return dict(self._schedule or {})

    def close(self):
        super().close()
        self.leadership.release()


def sends_once(task_name: str) -> bool:
    """Tasks that make runs; the heartbeat is harmless twice and sent every minute."""
    return task_name.startswith(MAINTENANCE_PREFIX) and task_name not in UNRECORDED_TASKS
