"""monitor_validation: health and Nagios exit code in each state, JSON keys, --period."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.heartbeat import NAME
from maintenance.models import Heartbeat, MaintenanceRun
from maintenance.schedules import seed
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_answers")]
OPERATIONS = ("archive_old_scenes", "recalculate_xp", "validate_data_integrity")
KEYS = {
    "timestamp",
    "period_hours",
    "health",
    "checks",
    "operations",
    "characters",
    "chronicles",
    "scenes",
    "findings",
}


def monitor(*args):
    """(exit code, JSON report)."""
    out = StringIO()
    try:
        call_command("monitor_validation", "--json", *args, stdout=out)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, json.loads(out.getvalue())


def checks(report):
    return {check["name"]: check for check in report["checks"]}


def beat_alive(age=timedelta(seconds=10)):
    Heartbeat.objects.update_or_create(
        name=NAME, defaults={"seen_at": timezone.now() - age, "hostname": "worker-1"}
    )


def succeed_all():
    for name in OPERATIONS:
        run = execute(create_run(name, {}, trigger="beat"))
        assert run.status == "succeeded"


def run_record(operation, status, finished_ago, error=""):
    finished = timezone.now() - finished_ago
    return MaintenanceRun.objects.create(
        operation=operation,
        trigger="beat",
        status=status,
        created_at=finished - timedelta(minutes=1),
        started_at=finished - timedelta(minutes=1),
        finished_at=finished,
        error=error,
    )


def test_fresh_install_warns_that_nothing_has_run():
    seed()

    code, report = monitor()

    assert set(report) >= KEYS
    assert report["health"] == "WARNING" and code == 1
    assert checks(report)["heartbeat"]["status"] == "WARNING"
    for name in OPERATIONS:
        assert checks(report)[name]["status"] == "OK"
        assert "not run yet" in checks(report)[name]["detail"]
        assert report["operations"][name]["last_run"] is None
    assert report["findings"]["open"] is None


def test_all_good_is_ok():
    seed()
    factories.scene(created_days_ago=400, active_days_ago=300, chronicle=factories.chronicle())
    succeed_all()
    beat_alive()

    code, report = monitor()

    assert (report["health"], code) == ("OK", 0)
    assert {check["status"] for check in report["checks"]} == {"OK"}
    info = report["operations"]["archive_old_scenes"]
    assert info["last_run"]["status"] == "succeeded" and info["overdue"] is False
    assert info["schedules"] == ["Archive old scenes (daily)"]
    assert report["scenes"] == {"total": 1, "archived": 1, "eligible_for_archiving": 0}
    assert report["findings"]["open"] == 0


def test_a_daily_job_without_success_for_over_a_day_is_overdue():
    seed()
    succeed_all()
    beat_alive()
    MaintenanceRun.objects.filter(operation="recalculate_xp").update(
        finished_at=timezone.now() - timedelta(days=1, hours=5)
    )

    code, report = monitor()

    assert (report["health"], code) == ("WARNING", 1)
    assert report["operations"]["recalculate_xp"]["overdue"] is True
    assert "overdue" in checks(report)["recalculate_xp"]["detail"]
    assert checks(report)["archive_old_scenes"]["status"] == "OK"


def test_overdue_follows_the_operations_own_schedule():
    seed()
    succeed_all()
    beat_alive()
    weekly = IntervalSchedule.objects.create(every=7, period=IntervalSchedule.DAYS)
    PeriodicTask.objects.filter(task="maintenance.recalculate_xp").update(
        crontab=None, interval=weekly
    )
    MaintenanceRun.objects.filter(operation="recalculate_xp").update(
        finished_at=timezone.now() - timedelta(days=3)
    )

    code, report = monitor()

    assert report["operations"]["recalculate_xp"]["overdue"] is False
    assert code == 0


def test_an_unscheduled_operation_is_never_overdue():
    beat_alive()
    succeed_all()
    MaintenanceRun.objects.update(finished_at=timezone.now() - timedelta(days=30))

    code, report = monitor()

    assert code == 0
    assert checks(report)["archive_old_scenes"]["detail"].startswith("not scheduled")


def test_a_failed_latest_run_warns_and_three_in_a_row_are_critical():
    seed()
    succeed_all()
    beat_alive()
    an_hour_ago = timezone.now() - timedelta(hours=1)
    MaintenanceRun.objects.update(created_at=an_hour_ago, finished_at=an_hour_ago)
    run_record("archive_old_scenes", "failed", timedelta(minutes=5), "OperationalError: boom")

    code, report = monitor()
    assert (report["health"], code) == ("WARNING", 1)
    assert "OperationalError: boom" in checks(report)["archive_old_scenes"]["detail"]

    run_record("archive_old_scenes", "failed", timedelta(minutes=4), "OperationalError: boom")
    run_record("archive_old_scenes", "failed", timedelta(minutes=3), "OperationalError: boom")
    code, report = monitor()
    assert (report["health"], code) == ("CRITICAL", 2)
    assert "the last 3 runs failed" in checks(report)["archive_old_scenes"]["detail"]
    assert report["operations"]["archive_old_scenes"]["failures_in_period"] == 3


def test_a_stale_heartbeat_is_critical():
    seed()
    succeed_all()
    beat_alive(age=timedelta(minutes=20))

    code, report = monitor()

    assert (report["health"], code) == ("CRITICAL", 2)
    assert "beat or the worker is down" in checks(report)["heartbeat"]["detail"]


def test_the_period_asked_for_is_the_period_used():
    beat_alive()
    run_record("recalculate_xp", "succeeded", timedelta(hours=30))
    run_record("recalculate_xp", "succeeded", timedelta(hours=2))
    factories.scene()

    _, day = monitor()
    _, two_days = monitor("--period", "48")

    assert (day["period_hours"], two_days["period_hours"]) == (24, 48)
    assert day["operations"]["recalculate_xp"]["runs_in_period"] == 1
    assert two_days["operations"]["recalculate_xp"]["runs_in_period"] == 2


def test_counts_of_characters_and_chronicles():
    from chronicles.models import Character, Chronicle

    Chronicle.objects.create(name="Open")
    Chronicle.objects.create(name="Closed", archived_at=timezone.now())
    Character.objects.create(name="New")
    old = Character.objects.create(name="Old", created_at=timezone.now() - timedelta(days=9))
    Character.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=9))

    _, report = monitor()

    assert report["characters"] == {"total": 2, "created_in_period": 1, "modified_in_period": 1}
    assert report["chronicles"] == {"total": 2, "active": 1, "archived": 1}


def test_open_findings_come_from_the_latest_validation():
    factories.scene(chronicle=None)
    execute(create_run("validate_data_integrity", {}, trigger="beat"))

    _, report = monitor()

    assert report["findings"]["open"] == 1
    assert report["findings"]["by_rule"] == {"scene_without_chronicle": 1}


def test_human_output_names_the_health_first():
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("monitor_validation", stdout=out)
    assert out.getvalue().startswith("MAINTENANCE WARNING")


@pytest.mark.parametrize("period", ["0", "-5", "soon", "99999"])
def test_a_bad_period_is_unknown_exit_3(period):
    with pytest.raises(CommandError) as raised:
        call_command("monitor_validation", "--period", period, stdout=StringIO())
    assert raised.value.returncode == 3
