"""Crontab rows of the schedules: each seeded schedule on a row of its own (django-celery-
beat finds rows by their fields, so two schedules at 04:00 would share one and an edit of
one would re-time the other), and moving schedules to a new TIME_ZONE."""

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import CharField
from django.db.models.functions import Cast
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from maintenance.schedules import DEFAULT_SCHEDULES, MAINTENANCE_PREFIX

CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


@dataclass(frozen=True)
class CrontabOf:
    """A periodic task's crontab as stored, its zone as text: reading the row itself
    fails on a zone name that zoneinfo does not know."""

    task_id: int
    name: str
    crontab_id: int
    fields: dict  # the five cron fields
    zone: str

    def cron(self) -> dict:
        return {**self.fields, "timezone": self.zone}


def crontabs_of(tasks) -> list[CrontabOf]:
    """The crontabs of the periodic tasks in the queryset `tasks` that have one, by name."""
    rows = (
        tasks.filter(crontab__isnull=False)
        .annotate(zone_text=Cast("crontab__timezone", CharField()))
        .order_by("name")
        .values("pk", "name", "crontab_id", "zone_text", *(f"crontab__{f}" for f in CRON_FIELDS))
    )
    return [
        CrontabOf(
            task_id=row["pk"],
            name=row["name"],
            crontab_id=row["crontab_id"],
            fields={f: row[f"crontab__{f}"] for f in CRON_FIELDS},
            zone=row["zone_text"] or "",
        )
        for row in rows
    ]


def maintenance_crontabs() -> list[CrontabOf]:
    return crontabs_of(PeriodicTask.objects.filter(task__startswith=MAINTENANCE_PREFIX))


def known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def sharing(of: CrontabOf) -> list[str]:
    """The names of the other periodic tasks on the same crontab row."""
    others = PeriodicTask.objects.filter(crontab_id=of.crontab_id).exclude(pk=of.task_id)
    return list(others.order_by("name").values_list("name", flat=True))


def _move_to_new_row(of: CrontabOf, zone: str) -> int:
    """Put the task on a new crontab row with its fields in `zone`. The task's save()
    tells a running beat (django-celery-beat's PeriodicTasks.changed)."""
    row = CrontabSchedule.objects.create(**of.fields, timezone=zone)
    task = PeriodicTask.objects.get(pk=of.task_id)
    task.crontab = row
    task.save(update_fields=["crontab"])
    return row.pk


@dataclass(frozen=True)
class Split:
    name: str
    old_row: int
    new_row: int
    others: list[str]


def split_shared_crontabs() -> list[Split]:
    """Give each seeded schedule (by its default name) whose crontab row another task
    uses a copy of that row of its own. The other tasks keep the row and nothing is
    deleted; the same values are no edit, so an admin's edits stay as they are."""
    names = [default.name for default in DEFAULT_SCHEDULES if default.crontab]
    splits = []
    with transaction.atomic():
        for of in crontabs_of(PeriodicTask.objects.filter(name__in=names)):
            others = sharing(of)
            # A zone zoneinfo does not know cannot be copied; --retime replaces it.
            if others and known_zone(of.zone):
                new_row = _move_to_new_row(of, of.zone)
                splits.append(Split(of.name, of.crontab_id, new_row, others))
    return splits


def in_other_zones(zone: str) -> list[CrontabOf]:
    """The maintenance schedules whose crontab runs in a zone other than `zone`."""
    return [of for of in maintenance_crontabs() if of.zone != zone]


def retime(of: CrontabOf, zone: str) -> None:
    """Move a schedule to `zone` at the same minute/hour/day fields, on a row of its own
    (a shared row is copied first, so the other tasks on it keep their times)."""
    with transaction.atomic():
        if sharing(of):
            _move_to_new_row(of, zone)
            return
        # update(), not save(): a row whose zone zoneinfo does not know cannot be loaded.
        CrontabSchedule.objects.filter(pk=of.crontab_id).update(timezone=zone)
        PeriodicTasks.update_changed()  # what saving the row would signal to beat


def keep_others_apart() -> list[str]:
    """Beat's own entries (celery.backend_cleanup at 04:00) are linked by django-celery-
    beat to any row with their fields, a maintenance schedule's too: put each such task
    on a row no maintenance schedule uses, an unused identical one if there is one.
    Returns the names of the tasks moved."""
    moved = []
    maintenance_rows = set(
        PeriodicTask.objects.filter(
            task__startswith=MAINTENANCE_PREFIX, crontab__isnull=False
        ).values_list("crontab_id", flat=True)
    )
    others = PeriodicTask.objects.filter(crontab_id__in=maintenance_rows).exclude(
        task__startswith=MAINTENANCE_PREFIX
    )
    with transaction.atomic():
        for of in crontabs_of(others):
            if not known_zone(of.zone):
                continue
            free = (
                CrontabSchedule.objects.filter(**of.fields, timezone=of.zone)
                .exclude(pk__in=maintenance_rows)
                .exclude(periodictask__task__startswith=MAINTENANCE_PREFIX)
                .order_by("pk")
                .first()
            )
            task = PeriodicTask.objects.get(pk=of.task_id)
            task.crontab = free or CrontabSchedule.objects.create(**of.fields, timezone=of.zone)
            task.save(update_fields=["crontab"])
            moved.append(of.name)
    return moved
