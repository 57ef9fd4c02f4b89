"""The default schedules, seeded into django-celery-beat without ever overwriting what
an admin has edited, and reading an operation's schedule back for monitoring."""

import json
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    description: str
    crontab: dict | None = None  # minute/hour, in settings.TIME_ZONE
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
        day_of_week="*",
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
