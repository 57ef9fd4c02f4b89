"""The Celery tasks, called in-process: parameters as kwargs, the trigger from the
message headers, bad kwargs as a failed run with a readable error."""

import pytest

from maintenance.engine.triggers import trigger_from
from maintenance.models import MaintenanceRun
from maintenance.tasks import OPERATION_TASKS
from tests import factories
from tests.factories import task_summary

pytestmark = pytest.mark.django_db
archive_task = OPERATION_TASKS["archive_old_scenes"]


def test_every_operation_is_a_named_task():
    from celery import current_app

    assert "maintenance.archive_old_scenes" in current_app.tasks
    assert archive_task.name == "maintenance.archive_old_scenes"


def test_a_beat_message_is_recorded_as_beat_with_its_schedule_name():
    scene = factories.scene()

    result = task_summary(
        archive_task.apply(
            kwargs={"older_than_days": 30, "batch_size": 50},
            headers={"periodic_task_name": "nightly archive"},
        )
    )

    run = MaintenanceRun.objects.get(pk=result["run_id"])
    assert (run.trigger, run.periodic_task_name) == ("beat", "nightly archive")
    assert run.params == {"older_than_days": 30, "chronicle_id": None}
    assert run.batch_size == 50
    assert result["status"] == "succeeded" and result["changed"] == 1
    scene.refresh_from_db()
    assert scene.archived_at is not None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"older_than_days": "soon"}, "older_than_days must be a whole number"),
        ({"older_than_days": -3}, "older_than_days must be at least 1"),
        ({"dry_run": "yes"}, "dry_run must be true or false"),
        ({"olderthan": 3}, "unknown parameter 'olderthan'"),
        ({"batch_size": [1]}, "batch_size must be a whole number"),
    ],
)
def test_bad_kwargs_give_a_failed_run_with_a_readable_error(kwargs, message):
    scene = factories.scene()

    result = task_summary(archive_task.apply(kwargs=kwargs, headers={"periodic_task_name": "typo"}))

    run = MaintenanceRun.objects.get(pk=result["run_id"])
    assert run.status == "failed"
    assert run.error.startswith("invalid parameters:") and message in run.error
    assert run.trigger == "beat"
    scene.refresh_from_db()
    assert scene.archived_at is None


def test_a_recorded_run_is_executed_by_id():
    factories.scene()
    run = MaintenanceRun.objects.create(
        operation="archive_old_scenes",
        trigger="cli",
        params={"older_than_days": 90, "chronicle_id": None},
    )

    result = task_summary(archive_task.apply(kwargs={"run_id": run.pk}))

    assert result["run_id"] == run.pk and result["status"] == "succeeded"


def test_a_run_id_of_another_operation_is_refused():
    other = MaintenanceRun.objects.create(operation="something_else", trigger="cli")

    result = task_summary(archive_task.apply(kwargs={"run_id": other.pk}))

    assert result["status"] == "failed" and "no such run" in result["error"]
    other.refresh_from_db()
    assert other.status == "queued"


def test_a_redelivered_message_finds_its_run_again():
    factories.scene()
    first = task_summary(archive_task.apply(kwargs={}, task_id="fixed-task-id"))

    again = task_summary(archive_task.apply(kwargs={}, task_id="fixed-task-id"))

    assert again["run_id"] == first["run_id"]
    assert MaintenanceRun.objects.count() == 1


@pytest.mark.parametrize(
    "headers, trigger",
    [
        ({"periodic_task_name": "nightly"}, "beat"),
        ({"maintenance_trigger": "admin", "periodic_task_name": "nightly"}, "admin"),
        ({"maintenance_trigger": "cli"}, "cli"),
        ({"maintenance_trigger": "root"}, "api"),
        ({}, "api"),
    ],
)
def test_trigger_resolution(headers, trigger):
    assert trigger_from(headers) == trigger


def test_rejected_kwargs_are_stored_as_given_even_when_json_cannot_hold_them():
    result = task_summary(
        archive_task.apply(kwargs={"name\x00": "a\x00b", "older_than_days": float("inf")})
    )

    run = MaintenanceRun.objects.get(pk=result["run_id"])
    assert run.status == "failed"
    assert run.params == {"name\\u0000": "a\\u0000b", "older_than_days": "inf"}
