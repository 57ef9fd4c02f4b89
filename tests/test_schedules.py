"""Default schedules: seeded once, with an explicit time zone, never overwriting edits."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from maintenance.heartbeat import NAME
from maintenance.models import Heartbeat
from maintenance.schedules import DEFAULT_SCHEDULES, seed
from maintenance.tasks import heartbeat_task

pytestmark = pytest.mark.django_db


def test_seeding_creates_the_daily_and_weekly_jobs_and_the_heartbeat(settings):
    seed()

    tasks = {task.task: task for task in PeriodicTask.objects.all()}
    assert set(tasks) == {
        "maintenance.validate_data_integrity",
        "maintenance.recalculate_xp",
        "maintenance.archive_old_scenes",
        "maintenance.purge_history",
        "maintenance.heartbeat",
    }
    for name in ("validate_data_integrity", "recalculate_xp", "archive_old_scenes"):
        crontab = tasks[f"maintenance.{name}"].crontab
        assert crontab.day_of_week == "*" and crontab.hour.isdigit()
        assert str(crontab.timezone) == settings.TIME_ZONE
    weekly = tasks["maintenance.purge_history"].crontab
    assert (weekly.day_of_week, weekly.day_of_month, weekly.month_of_year) == ("0", "*", "*")
    assert weekly.hour.isdigit() and str(weekly.timezone) == settings.TIME_ZONE
    assert tasks["maintenance.heartbeat"].interval.every == 60
    assert json.loads(tasks["maintenance.archive_old_scenes"].kwargs) == {"older_than_days": 90}
    assert json.loads(tasks["maintenance.purge_history"].kwargs) == {"older_than_days": 90}


def test_seeding_again_keeps_what_an_admin_edited():
    seed()
    archive = PeriodicTask.objects.get(task="maintenance.archive_old_scenes")
    archive.kwargs = json.dumps({"older_than_days": 30})
    archive.crontab = CrontabSchedule.objects.create(minute="15", hour="1")
    archive.enabled = False
    archive.save()

    outcome = seed()

    assert outcome == [(schedule.name, False) for schedule in DEFAULT_SCHEDULES]
    archive.refresh_from_db()
    assert json.loads(archive.kwargs) == {"older_than_days": 30}
    assert (archive.crontab.hour, archive.enabled) == ("1", False)
    assert PeriodicTask.objects.count() == len(DEFAULT_SCHEDULES)


def test_a_deleted_default_comes_back_and_the_others_stay():
    seed()
    PeriodicTask.objects.filter(task="maintenance.recalculate_xp").delete()

    out = StringIO()
    call_command("setup_schedules", stdout=out)

    assert "created  Recalculate XP (daily)" in out.getvalue()
    assert "kept     Validate data integrity (daily)" in out.getvalue()
    assert PeriodicTask.objects.count() == len(DEFAULT_SCHEDULES)


def test_the_heartbeat_task_records_the_worker():
    heartbeat_task.apply(headers={"periodic_task_name": "Heartbeat (every minute)"})

    beat = Heartbeat.objects.get(name=NAME)
    assert beat.hostname
    assert beat.periodic_task_name == "Heartbeat (every minute)"
