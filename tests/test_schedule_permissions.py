"""The PeriodicTask admin under hostile input and without the start permission,
generated with hypothesis: hostile args/kwargs texts posted to the add and change forms,
and the list actions on random mixes of schedules with the broker unreachable. Never a
500; nobody without start_maintenancerun creates, changes, enables or runs a
maintenance.* schedule; someone with it gets the run (or a failed run saying why)."""

import json
import os

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maintenance.engine.enqueue import BrokerUnavailable, check_broker
from maintenance.models import MaintenanceRun, ScheduleChange
from maintenance.tasks import OPERATION_TASKS
from tests.factories import task_summary
from worker.celery import app

pytestmark = pytest.mark.django_db
FORM_EXAMPLES = 100
ACTION_EXAMPLES = 100
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
CHANGELIST = "admin:django_celery_beat_periodictask_changelist"
ADD = "admin:django_celery_beat_periodictask_add"
CHANGE = "admin:django_celery_beat_periodictask_change"
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once
TASKS = [
    "maintenance.archive_old_scenes",
    "maintenance.validate_data_integrity",
    "maintenance.recalculate_xp",
    "maintenance.no_such_operation",
    "maintenance.ping",
    "chronicles.something_else",
    "celery.backend_cleanup",
]
BEAT_PERMISSIONS = [
    "add_periodictask",
    "change_periodictask",
    "view_periodictask",
    "view_intervalschedule",
    "view_maintenancerun",
]


@pytest.fixture
def broker_down(monkeypatch):
    for name in ("broker_url", "broker_write_url", "broker_read_url"):
        monkeypatch.setattr(app.conf, name, UNREACHABLE_BROKER)
    with pytest.raises(BrokerUnavailable):
        check_broker()


def staff(username: str, may_start: bool):
    # No password: hashing one costs more than the whole request (force_login needs none).
    user = get_user_model().objects.create_user(username, is_staff=True)
    names = BEAT_PERMISSIONS + (["start_maintenancerun"] if may_start else [])
    user.user_permissions.set(Permission.objects.filter(codename__in=names))
    return user


def client_for(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def maintenance(task: str) -> bool:
    return task.startswith("maintenance.")


def deep_text(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
hostile_text = st.one_of(
    text,
    st.just("{}"),
    st.just("[]"),
    json_value.map(json.dumps),
    st.builds(deep_text, st.integers(1_000, 50_000)),
    st.integers(5_000, 6_000).map(lambda n: "9" * n),
    st.integers(100_000, 110_000).map(lambda n: json.dumps({"older_than_days": "x" * n})),
    st.just('{"fix": true}'),
    st.just('{"a\\u0000": "\\u0000"}'),
)
stored_text = hostile_text.filter(lambda t: "\x00" not in t)  # no database keeps a raw NUL


def form_data(task: str, args: str, kwargs: str, enabled: bool, interval) -> dict:
    data = {
        "name": "generated",
        "regtask": "",
        "task": task,
        "description": "",
        "interval": interval.pk,
        "args": args,
        "kwargs": kwargs,
        "headers": "{}",
        "priority": "",
        "expire_seconds": "",
        "queue": "",
        "exchange": "",
        "routing_key": "",
    }
    if enabled:
        data["enabled"] = "on"
    return data


def snapshot():
    return list(PeriodicTask.objects.order_by("pk").values_list("pk", "task", "enabled", "kwargs"))


@settings(HYPOTHESIS, max_examples=FORM_EXAMPLES)
@given(
    may_start=st.booleans(),
    existing=st.one_of(st.none(), st.sampled_from(TASKS)),
    task=st.sampled_from(TASKS),
    args=st.one_of(st.just("[]"), hostile_text),
    kwargs=hostile_text,
    enabled=st.booleans(),
)
def test_the_schedule_forms_never_fail_and_guard_maintenance_schedules(
    broker_down, may_start, existing, task, args, kwargs, enabled
):
    PeriodicTask.objects.all().delete()
    get_user_model().objects.all().delete()
    user = staff("ops", may_start)
    every_day, _ = IntervalSchedule.objects.get_or_create(every=1, period="days")
    target = None
    if existing is not None:
        target = PeriodicTask.objects.create(
            name="existing", task=existing, interval=every_day, enabled=False
        )
    before = snapshot()
    url = reverse(CHANGE, args=[target.pk]) if target else reverse(ADD)

    response = client_for(user).post(url, form_data(task, args, kwargs, enabled, every_day))

    assert response.status_code < 500, response.content[:2000]
    touches = maintenance(task) or (existing is not None and maintenance(existing))
    if touches and not may_start:
        assert snapshot() == before
        assert response.status_code in (200, 403)
    if snapshot() != before:  # saved: the change is remembered
        saved = PeriodicTask.objects.get(name="generated")
        assert ScheduleChange.objects.get(periodic_task=saved).changed_by == "ops"
        if maintenance(saved.task):
            assert json.loads(saved.args or "[]") == []
            assert isinstance(json.loads(saved.kwargs or "{}"), dict)


def stored_schedule(index: int, task: str, enabled: bool, args: str, kwargs: str, interval):
    return PeriodicTask.objects.create(
        name=f"schedule {index}",
        task=task,
        interval=interval,
        enabled=enabled,
        args=args,
        kwargs=kwargs,
    )


schedule_spec = st.tuples(
    st.sampled_from(TASKS), st.booleans(), st.one_of(st.just("[]"), stored_text), stored_text
)


@settings(HYPOTHESIS, max_examples=ACTION_EXAMPLES)
@given(
    may_start=st.booleans(),
    specs=st.lists(schedule_spec, min_size=1, max_size=4),
    action=st.sampled_from(["run_tasks", "enable_tasks", "toggle_tasks", "disable_tasks"]),
)
def test_list_actions_never_fail_and_need_the_permission_for_maintenance(
    broker_down, may_start, specs, action
):
    PeriodicTask.objects.all().delete()
    MaintenanceRun.objects.all().delete()
    get_user_model().objects.all().delete()
    user = staff("ops", may_start)
    every_day, _ = IntervalSchedule.objects.get_or_create(every=1, period="days")
    chosen = [stored_schedule(i, *spec, every_day) for i, spec in enumerate(specs)]
    before = {task.pk: task.enabled for task in chosen}
    any_maintenance = any(maintenance(task.task) for task in chosen)

    response = client_for(user).post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [task.pk for task in chosen]},
        follow=True,
    )

    assert response.status_code < 500, response.content[:2000]
    after = dict(PeriodicTask.objects.values_list("pk", "enabled"))
    if any_maintenance and not may_start:
        assert MaintenanceRun.objects.count() == 0
        turned_on = [pk for pk in after if after[pk] and not before[pk]]
        assert turned_on == []
        if action != "disable_tasks":  # turning schedules off needs no start permission
            assert not ScheduleChange.objects.exists()
    if action == "run_tasks" and (may_start or not any_maintenance):
        # The broker is down: each maintenance schedule is a failed run that says why
        # (unreadable or invalid arguments) or a message; never a queued run.
        for run in MaintenanceRun.objects.all():
            assert run.status == "failed" and run.trigger == "admin"
            assert run.requested_by == "ops" and "\n" not in run.error
        assert not MaintenanceRun.objects.filter(status="queued").exists()


def test_a_user_with_the_permission_gets_the_run(monkeypatch):
    from maintenance.engine import enqueue

    monkeypatch.setattr(enqueue, "check_broker", lambda: None)
    monkeypatch.setattr(enqueue, "enqueue", lambda run: None)  # no broker in unit tests
    every_day = IntervalSchedule.objects.create(every=1, period="days")
    nightly = PeriodicTask.objects.create(
        name="nightly", task="maintenance.recalculate_xp", interval=every_day, kwargs="{}"
    )

    client_for(staff("ops", may_start=True)).post(
        reverse(CHANGELIST), {"action": "run_tasks", "_selected_action": [nightly.pk]}
    )

    run = MaintenanceRun.objects.get()
    assert (run.status, run.trigger, run.requested_by) == ("queued", "admin", "ops")


def test_without_the_permission_a_fix_schedule_cannot_be_created():
    every_day = IntervalSchedule.objects.create(every=1, period="days")
    data = form_data("maintenance.validate_data_integrity", "[]", '{"fix": true}', True, every_day)

    response = client_for(staff("viewer", may_start=False)).post(reverse(ADD), data)

    assert response.status_code == 200
    assert "do not have permission to start maintenance runs" in response.content.decode()
    assert not PeriodicTask.objects.exists()


def test_a_beat_run_names_who_last_changed_its_schedule():
    every_day = IntervalSchedule.objects.create(every=1, period="days")
    edited = PeriodicTask.objects.create(
        name="edited", task="maintenance.recalculate_xp", interval=every_day, enabled=False
    )
    PeriodicTask.objects.create(
        name="seeded", task="maintenance.recalculate_xp", interval=every_day
    )
    client_for(staff("ops", may_start=True)).post(
        reverse(CHANGELIST), {"action": "enable_tasks", "_selected_action": [edited.pk]}
    )
    task = OPERATION_TASKS["recalculate_xp"]

    task_summary(task.apply(kwargs={"dry_run": True}, headers={"periodic_task_name": "edited"}))
    task_summary(task.apply(kwargs={"dry_run": True}, headers={"periodic_task_name": "seeded"}))

    by_schedule = dict(
        MaintenanceRun.objects.values_list("periodic_task_name", "schedule_changed_by")
    )
    assert by_schedule == {"edited": "ops", "seeded": ScheduleChange.NOBODY}
