"""The default schedules, seeded into django-celery-beat without ever overwriting what
an admin has edited, and reading an operation's schedule back for monitoring."""

import copy
import json
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from maintenance.engine.runs import cut_error
from maintenance.models import ScheduleChange

MAINTENANCE_PREFIX = "maintenance."
# A beat message whose schedule text could not be read carries the reason under this
# kwarg; the task turns it into a failed run instead of beat disabling the schedule.
SCHEDULE_ERROR_KWARG = "maintenance_schedule_error"


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
    crontab, _ = CrontabSchedule.objects.get_or_create(
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
    """The DatabaseScheduler with MaintenanceEntry. Beat starts it through
    CELERY_BEAT_SCHEDULER (or --scheduler maintenance.schedules:MaintenanceScheduler)."""

    Entry = MaintenanceEntry
