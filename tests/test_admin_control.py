"""Pause, resume and cancel from the admin: buttons on the run page and list actions,
for staff with the start_maintenancerun permission only."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from maintenance.engine import enqueue
from maintenance.engine.runs import create_run
from maintenance.engine.states import Status
from maintenance.models import MaintenanceRun

pytestmark = pytest.mark.django_db


def staff(client, may_start):
    user = get_user_model().objects.create_user("keeper", password="pw", is_staff=True)
    names = ["view_maintenancerun"] + (["start_maintenancerun"] if may_start else [])
    user.user_permissions.set(Permission.objects.filter(codename__in=names))
    client.force_login(user)
    return user


def queued_run():
    return create_run("archive_old_scenes", {}, trigger=MaintenanceRun.Trigger.CLI)


def page(client, run):
    return client.get(reverse("admin:maintenance_maintenancerun_change", args=[run.pk]))


def press(client, run, action):
    url = reverse("admin:maintenance_maintenancerun_control", args=[run.pk, action])
    return client.post(url, follow=True)


def test_the_run_page_offers_what_the_status_allows_and_the_buttons_work(client, monkeypatch):
    sent = []
    monkeypatch.setattr("maintenance.admin.send", lambda run: sent.append(run.pk))
    staff(client, may_start=True)
    run = queued_run()

    assert b">Pause<" in page(client, run).content and b">Resume<" not in page(client, run).content
    response = press(client, run, "pause")
    run.refresh_from_db()
    assert run.status == Status.PAUSED and f"Run #{run.pk} is paused." in response.text
    assert b">Resume<" in page(client, run).content

    press(client, run, "resume")
    run.refresh_from_db()
    assert run.status == Status.QUEUED and sent == [run.pk]

    response = press(client, run, "resume")  # not allowed from queued: said, not a 500
    assert response.status_code == 200 and "cannot resume" in response.text

    press(client, run, "cancel")
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert b">Cancel<" not in page(client, run).content


def test_without_the_permission_no_buttons_and_no_control(client):
    staff(client, may_start=False)
    run = queued_run()

    assert b">Pause<" not in page(client, run).content
    assert press(client, run, "pause").status_code == 403
    url = reverse("admin:maintenance_maintenancerun_changelist")
    client.post(url, {"action": "cancel_runs", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert run.status == Status.QUEUED


def test_a_get_or_an_unknown_action_changes_nothing(client):
    staff(client, may_start=True)
    run = queued_run()
    url = reverse("admin:maintenance_maintenancerun_control", args=[run.pk, "pause"])
    assert client.get(url).status_code == 405
    assert press(client, run, "delete").status_code == 404
    run.refresh_from_db()
    assert run.status == Status.QUEUED


def test_list_actions_act_on_each_selected_run(client, monkeypatch):
    monkeypatch.setattr(enqueue, "_publish", lambda run, connection=None: None)
    staff(client, may_start=True)
    runs = [queued_run() for _ in range(3)]
    url = reverse("admin:maintenance_maintenancerun_changelist")

    client.post(url, {"action": "pause_runs", "_selected_action": [r.pk for r in runs]})
    assert set(MaintenanceRun.objects.values_list("status", flat=True)) == {Status.PAUSED}
    client.post(url, {"action": "resume_runs", "_selected_action": [runs[0].pk]})
    client.post(url, {"action": "cancel_runs", "_selected_action": [runs[1].pk]})
    statuses = [MaintenanceRun.objects.get(pk=r.pk).status for r in runs]
    assert statuses == [Status.QUEUED, Status.CANCELLED, Status.PAUSED]


@pytest.mark.parametrize("object_id", ["²", "١", "99999999999999999999999", "abc"])
def test_a_run_page_of_a_strange_id_is_never_a_500(client, object_id):
    staff(client, may_start=True)
    url = reverse("admin:maintenance_maintenancerun_change", args=[object_id])
    assert client.get(url).status_code in (302, 404)
