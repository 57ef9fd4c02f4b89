"""Starting runs from the admin: django-celery-beat's "Run selected tasks" and the run
history's re-run actions, for staff with the permission only."""

import html
import json

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from chronicles.models import Scene
from maintenance.engine import enqueue
from maintenance.models import MaintenanceRun
from tests import factories

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:django_celery_beat_periodictask_changelist"


@pytest.fixture
def in_process(monkeypatch):
    """Tasks run in this process (the integration suite sends them to a real worker)."""
    monkeypatch.setattr(enqueue, "check_broker", lambda: None)
    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = eager


def staff(username, may_start):
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    names = ["view_periodictask", "change_periodictask", "view_maintenancerun"]
    if may_start:
        names.append("start_maintenancerun")
    user.user_permissions.set(Permission.objects.filter(codename__in=names))
    return user


def schedule(name, task, kwargs):
    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    return PeriodicTask.objects.create(
        name=name, task=task, interval=every_day, kwargs=json.dumps(kwargs)
    )


def run_action(client, url, action, objects):
    return client.post(
        reverse(url),
        {"action": action, "_selected_action": [o.pk for o in objects]},
        follow=True,
    )


def test_run_selected_tasks_records_an_admin_run_with_the_schedule_kwargs(client, in_process):
    factories.scene(created_days_ago=40)
    nightly = schedule("archive nightly", "maintenance.archive_old_scenes", {"older_than_days": 30})
    client.force_login(staff("ops", may_start=True))

    page = run_action(client, CHANGELIST, "run_tasks", [nightly])

    run = MaintenanceRun.objects.get()
    assert (run.trigger, run.periodic_task_name, run.requested_by) == (
        "admin",
        "archive nightly",
        "ops",
    )
    assert run.params == {"older_than_days": 30, "chronicle_id": None}
    assert run.status == "succeeded" and run.changed == 1, run.error
    assert f"as run #{run.pk}" in page.content.decode()


@pytest.mark.parametrize(
    "task, kwargs, message",
    [
        ("maintenance.archive_old_scenes", {"older_than_days": "never"}, "whole number"),
        ("maintenance.validate_data_integrity", {"rules": ["nonsense"]}, "unknown nonsense"),
        ("maintenance.recalculate_xp", {"fix": True}, "unknown parameter 'fix'"),
    ],
)
def test_bad_kwargs_on_a_schedule_give_a_failed_run_that_says_why(
    client, in_process, task, kwargs, message
):
    factories.scene()
    broken = schedule("typo", task, kwargs)
    client.force_login(staff("ops", may_start=True))

    page = run_action(client, CHANGELIST, "run_tasks", [broken])

    run = MaintenanceRun.objects.get()
    assert run.status == "failed" and run.trigger == "admin"
    assert run.error.startswith("invalid parameters:") and message in run.error
    assert message in html.unescape(page.content.decode())
    assert not Scene.objects.filter(archived_at__isnull=False).exists()


def test_staff_without_the_permission_cannot_start_a_run(client, in_process):
    factories.scene()
    nightly = schedule("archive nightly", "maintenance.archive_old_scenes", {})
    client.force_login(staff("viewer", may_start=False))

    page = run_action(client, CHANGELIST, "run_tasks", [nightly])

    assert "do not have permission to start maintenance runs" in page.content.decode()
    assert not MaintenanceRun.objects.exists()
    assert not Scene.objects.filter(archived_at__isnull=False).exists()


def test_the_schedule_form_refuses_bad_kwargs_and_saves_nothing(admin_client):
    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    form = {
        "name": "bad archive",
        "regtask": "maintenance.archive_old_scenes",
        "task": "",
        "interval": every_day.pk,
        "args": "[]",
        "kwargs": json.dumps({"older_than_days": 0}),
        "enabled": "on",
        "queue": "",
        "exchange": "",
        "routing_key": "",
        "headers": "{}",
        "priority": "",
        "expires": "",
        "expire_seconds": "",
        "one_off": "",
        "start_time": "",
        "description": "",
    }

    page = admin_client.post(reverse("admin:django_celery_beat_periodictask_add"), form)

    assert page.status_code == 200
    assert "Invalid kwargs for archive_old_scenes: older_than_days must be at least 1" in (
        page.content.decode()
    )
    assert not PeriodicTask.objects.filter(name="bad archive").exists()


def test_rerun_and_dry_run_again_from_the_run_history(client, in_process):
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run

    factories.scene(created_days_ago=40)
    first = execute(
        create_run("archive_old_scenes", {"older_than_days": 30, "dry_run": True}, trigger="cli")
    )
    client.force_login(staff("ops", may_start=True))
    url = "admin:maintenance_maintenancerun_changelist"

    run_action(client, url, "dry_run_again", [first])
    run_action(client, url, "rerun", [first])

    dry, real = MaintenanceRun.objects.exclude(pk=first.pk).order_by("id")
    assert (dry.trigger, dry.dry_run, dry.params) == ("admin", True, first.params)
    assert (real.trigger, real.dry_run, real.changed) == ("admin", False, 1)


def test_rerun_actions_are_hidden_without_the_permission(client):
    factories.scene()
    client.force_login(staff("viewer", may_start=False))

    page = client.get(reverse("admin:maintenance_maintenancerun_changelist"))

    assert page.status_code == 200
    assert 'value="rerun"' not in page.content.decode()
