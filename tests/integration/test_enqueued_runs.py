"""Runs through real Redis to a real worker process, and from a real beat."""

import json
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from chronicles.models import Scene
from maintenance.models import MaintenanceRun
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(probe, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out")


def run_command(*args):
    out = StringIO()
    call_command("run_maintenance", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_cli_enqueues_a_run_that_a_real_worker_executes(celery_worker_process):
    old = [factories.scene(name=f"old{i}").id for i in range(12)]
    factories.scene(active_days_ago=2)

    summary = json.loads(run_command("archive_old_scenes", "--batch-size", "5", "--wait", "--json"))

    assert summary["status"] == "succeeded"
    assert summary["trigger"] == "cli"
    assert (summary["processed"], summary["changed"], summary["batches"]) == (12, 12, 3)
    archived = Scene.objects.filter(archived_at__isnull=False).values_list("id", flat=True)
    assert sorted(archived) == old
    run = MaintenanceRun.objects.get(pk=summary["run_id"])
    celery_worker_process.wait_for_log(f"maintenance.archive_old_scenes[{run.celery_task_id}]")


def test_an_enqueue_without_wait_prints_the_run_and_task(celery_worker_process):
    factories.scene()

    enqueued = json.loads(run_command("archive_old_scenes", "--dry-run", "--json"))

    assert set(enqueued) == {"run_id", "task_id", "operation", "status"}
    assert enqueued["status"] == "queued"
    run = MaintenanceRun.objects.get(pk=enqueued["run_id"])
    assert run.celery_task_id == enqueued["task_id"]
    celery_worker_process.wait_for_log(f"[{enqueued['task_id']}] succeeded")
    run.refresh_from_db()
    assert run.status == "succeeded" and run.dry_run and run.changed == 1


def test_beat_runs_the_operation_with_the_schedule_kwargs(
    celery_worker_process, celery_beat_process
):
    scene = factories.scene(created_days_ago=40)
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="archive every second",
        task="maintenance.archive_old_scenes",
        interval=every_second,
        kwargs=json.dumps({"older_than_days": 30}),
    )

    celery_beat_process.start()
    run = wait_for(
        lambda: MaintenanceRun.objects.filter(trigger="beat", status="succeeded").first()
    )
    celery_beat_process.stop()

    assert run.periodic_task_name == "archive every second"
    assert run.params["older_than_days"] == 30
    scene.refresh_from_db()
    assert scene.archived_at is not None


def test_beat_and_a_worker_keep_the_heartbeat_fresh(celery_worker_process, celery_beat_process):
    from maintenance.heartbeat import NAME
    from maintenance.models import Heartbeat
    from maintenance.monitoring import heartbeat_check

    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="heartbeat every second", task="maintenance.heartbeat", interval=every_second
    )

    celery_beat_process.start()
    beat = wait_for(lambda: Heartbeat.objects.filter(name=NAME).first())
    celery_beat_process.stop()

    assert beat.periodic_task_name == "heartbeat every second"
    check, _ = heartbeat_check(beat.seen_at)
    assert check.status == "OK"


def test_the_admin_starts_a_run_that_a_real_worker_executes(celery_worker_process, admin_client):
    from django.urls import reverse

    factories.scene(created_days_ago=40)
    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    nightly = PeriodicTask.objects.create(
        name="archive nightly",
        task="maintenance.archive_old_scenes",
        interval=every_day,
        kwargs=json.dumps({"older_than_days": 30}),
    )

    admin_client.post(
        reverse("admin:django_celery_beat_periodictask_changelist"),
        {"action": "run_tasks", "_selected_action": [nightly.pk]},
    )

    run = wait_for(lambda: MaintenanceRun.objects.filter(status="succeeded").first())
    assert (run.trigger, run.periodic_task_name) == ("admin", "archive nightly")
    assert run.changed == 1
    celery_worker_process.wait_for_log(f"[{run.celery_task_id}] succeeded")
