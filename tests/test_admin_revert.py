"""Revert a run and apply a reviewed dry run from the admin: the buttons on the run page,
the confirmation page's counts, and Confirm, which enqueues one run on the real broker
(CELERY_BROKER_URL, the broker_queue fixture) for staff with the start_maintenancerun
permission only. Also the findings-over-time fields on the run, finding and batch pages."""

import re
from collections import Counter
from datetime import UTC, datetime

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from chronicles.testdata.generator import Options, generate
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import Finding, MaintenanceRun
from maintenance.reporting import trend_text
from tests import factories

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
VIEW = ["view_maintenancerun", "view_finding", "view_runbatch"]
REVERT, APPLY = b">Revert<", b">Apply this plan<"


@pytest.fixture
def planted():
    generate(Options(seed=8, chronicles=2, characters=60, scenes=80, defect_rate=0.1, now=NOW))


def staff(client, may_start=True, username="keeper"):
    user = get_user_model().objects.create_user(username, is_staff=True)
    names = VIEW + (["start_maintenancerun"] if may_start else [])
    user.user_permissions.set(Permission.objects.filter(codename__in=names))
    client.force_login(user)
    return user


def run(operation, **raw):
    done = execute(create_run(operation, raw, trigger=MaintenanceRun.Trigger.CLI))
    assert done.status == Status.SUCCEEDED, done.error
    return done


def page(client, run):
    return client.get(reverse("admin:maintenance_maintenancerun_change", args=[run.pk]))


def confirmation_url(kind, run):
    return reverse(f"admin:maintenance_maintenancerun_{kind}", args=[run.pk])


def counts_on(response) -> dict[str, int]:
    """The confirmation page's table: what, and how many rows."""
    assert response.status_code == 200
    table = response.text.split('id="revert-counts"', 1)[1].split("</tbody>", 1)[0]
    return {what: int(n) for what, n in re.findall(r"<td>([^<]+)</td><td[^>]*>(\d+)</td>", table)}


def started(operation):
    return list(MaintenanceRun.objects.filter(operation=operation))


def test_buttons_follow_the_kind_of_run(client, planted):
    staff(client)
    dry = run("validate_data_integrity", fix=True, dry_run=True)
    fix = run("validate_data_integrity", fix=True)
    check_only = run("validate_data_integrity")  # found, fixed nothing: nothing to revert
    imported = MaintenanceRun.objects.create(
        operation="import_characters", trigger="cli", status=Status.SUCCEEDED, changed=3
    )
    running = MaintenanceRun.objects.create(
        operation="archive_old_scenes", trigger="cli", status=Status.RUNNING
    )

    shown = {
        name: (REVERT in page(client, r).content, APPLY in page(client, r).content)
        for name, r in [
            ("fix", fix),
            ("dry", dry),
            ("check only", check_only),
            ("import", imported),
            ("running", running),
        ]
    }

    assert shown == {
        "fix": (True, False),
        "dry": (False, True),
        "check only": (False, False),
        "import": (False, False),
        "running": (False, False),
    }


def test_without_the_permission_no_buttons_no_page_and_no_run(client, planted):
    staff(client, may_start=False)
    dry = run("validate_data_integrity", fix=True, dry_run=True)
    fix = run("validate_data_integrity", fix=True)
    runs_before = MaintenanceRun.objects.count()

    content = page(client, fix).content + page(client, dry).content
    assert REVERT not in content and APPLY not in content
    for kind, target in [("revert", fix), ("apply", dry)]:
        url = confirmation_url(kind, target)
        assert client.get(url).status_code == 403
        assert client.post(url, {"confirm": "Confirm"}).status_code == 403
    assert MaintenanceRun.objects.count() == runs_before


def test_a_post_without_the_csrf_token_starts_nothing(planted):
    client = Client(enforce_csrf_checks=True)
    staff(client)
    fix = run("validate_data_integrity", fix=True)

    response = client.post(confirmation_url("revert", fix), {"confirm": "Confirm"})

    assert response.status_code == 403
    assert started("revert_run") == []


def test_the_revert_page_counts_the_fixes_by_rule(client, planted):
    staff(client)
    fix = run("validate_data_integrity", fix=True)
    fixed = Counter(Finding.objects.filter(run=fix, fixed=True).values_list("rule", flat=True))
    assert len(fixed) > 1

    response = client.get(confirmation_url("revert", fix))

    assert counts_on(response) == dict(fixed)
    assert "revert_conflict" in response.text and "left as they are" in response.text
    assert 'value="Confirm"' in response.text and "csrfmiddlewaretoken" in response.text
    assert 'value="Dry run first"' in response.text
    assert started("revert_run") == []  # looking starts nothing


def test_the_revert_page_of_an_archive_counts_its_batch_log(client):
    staff(client)
    for i in range(7):
        factories.scene(name=f"old{i}")
    archive = run("archive_old_scenes", batch_size=3)

    response = client.get(confirmation_url("revert", archive))

    assert counts_on(response) == {"archived scenes (from its batch log)": 7}


def test_the_apply_page_counts_the_plan(client, planted):
    staff(client)
    dry = run("validate_data_integrity", fix=True, dry_run=True)
    planned = Counter(
        Finding.objects.filter(run=dry, after__isnull=False).values_list("rule", flat=True)
    )

    response = client.get(confirmation_url("apply", dry))

    assert counts_on(response) == dict(planned)
    assert "apply_conflict" in response.text
    assert "Dry run first" not in response.text


def test_the_apply_page_of_an_archive_dry_run_counts_the_scenes_it_listed(client):
    staff(client)
    for i in range(5):
        factories.scene(name=f"old{i}")
    dry = run("archive_old_scenes", dry_run=True)

    assert counts_on(client.get(confirmation_url("apply", dry))) == {"scenes to archive": 5}


@pytest.mark.parametrize(
    "kind, operation, make", [("revert", "revert_run", False), ("apply", "apply_run", True)]
)
def test_confirm_enqueues_exactly_one_run_and_shows_it(
    client, planted, broker_queue, kind, operation, make
):
    staff(client)
    target = run("validate_data_integrity", fix=True, dry_run=make)

    response = client.post(confirmation_url(kind, target), {"confirm": "Confirm"}, follow=True)

    (new,) = started(operation)
    assert new.params == {"run_id": target.pk} and not new.dry_run
    assert (new.trigger, new.requested_by, new.status) == ("admin", "keeper", Status.QUEUED)
    assert response.redirect_chain[-1][0] == reverse(
        "admin:maintenance_maintenancerun_change", args=[new.pk]
    )
    assert f"Started {operation} as run #{new.pk}." in response.text
    (message,) = broker_queue.lrange(current_app.conf.task_default_queue, 0, -1)
    assert new.celery_task_id.encode() in message


def test_dry_run_first_enqueues_a_dry_run_revert(client, planted, broker_queue):
    staff(client)
    fix = run("validate_data_integrity", fix=True)

    client.post(confirmation_url("revert", fix), {"dry_run": "Dry run first"})

    (preview,) = started("revert_run")
    assert preview.params == {"run_id": fix.pk} and preview.dry_run
    # A dry run does not count as reverting: the real revert is still offered, and
    # once the preview has run, its plan can be applied.
    assert REVERT in page(client, fix).content
    assert execute(preview).status == Status.SUCCEEDED
    assert APPLY in page(client, preview).content


def test_a_second_revert_is_refused_with_the_reason_and_starts_nothing(
    client, planted, broker_queue
):
    staff(client)
    fix = run("validate_data_integrity", fix=True)
    client.post(confirmation_url("revert", fix), {"confirm": "Confirm"})
    (first,) = started("revert_run")
    runs_before = MaintenanceRun.objects.count()

    refused = client.post(confirmation_url("revert", fix), {"confirm": "Confirm"}, follow=True)

    # (the admin writes messages with a capital first letter)
    assert f"Run #{fix.pk} was already reverted by run #{first.pk}" in refused.text
    assert refused.redirect_chain[-1][0] == reverse(
        "admin:maintenance_maintenancerun_change", args=[fix.pk]
    )
    assert MaintenanceRun.objects.count() == runs_before
    assert REVERT not in page(client, fix).content
    assert broker_queue.llen(current_app.conf.task_default_queue) == 1  # the first one only


@pytest.mark.parametrize("method", ["get", "post"])
def test_what_cannot_be_reverted_or_applied_is_refused_with_one_line(client, planted, method):
    staff(client)
    dry = run("validate_data_integrity", fix=True, dry_run=True)
    fix = run("validate_data_integrity", fix=True)
    imported = MaintenanceRun.objects.create(
        operation="import_characters", trigger="cli", status=Status.SUCCEEDED
    )
    running = MaintenanceRun.objects.create(
        operation="archive_old_scenes", trigger="cli", status=Status.RUNNING
    )
    runs_before = MaintenanceRun.objects.count()
    cases = [
        ("revert", dry, "is a dry run"),
        ("revert", imported, "cannot be reverted"),
        ("revert", running, f"is {Status.RUNNING}: only a finished run"),
        ("apply", fix, "is not a dry run"),
        ("apply", running, "is not a dry run"),
    ]

    for kind, target, reason in cases:
        send = getattr(client, method)
        response = send(confirmation_url(kind, target), follow=True)
        assert response.status_code == 200 and reason in response.text, (kind, target)
        assert response.redirect_chain[-1][0].endswith(f"/{target.pk}/change/")

    assert MaintenanceRun.objects.count() == runs_before
    missing = reverse("admin:maintenance_maintenancerun_revert", args=[999_999])
    assert client.get(missing).status_code == 404


def test_findings_over_time_on_the_run_finding_and_batch_pages(client, planted):
    staff(client)
    run("validate_data_integrity")
    second = run("validate_data_integrity", fix=True, batch_size=20)
    for i in range(3):
        factories.scene(name=f"old{i}")
    archive = run("archive_old_scenes")
    assert trend_text(second)

    assert trend_text(second) in page(client, second).text
    assert "not counted" in page(client, archive).text
    finding = Finding.objects.filter(run=second, fixed=True).first()
    detail = client.get(reverse("admin:maintenance_finding_change", args=[finding.pk])).text
    assert finding.fingerprint in detail and "First seen at" in detail
    assert "Also written" in detail
    listing = client.get(reverse("admin:maintenance_finding_changelist")).text
    assert "First seen at" in listing
    batch = archive.batch_log.get()
    batch_page = client.get(reverse("admin:maintenance_runbatch_change", args=[batch.pk])).text
    assert "Written" in batch_page and "archived_at" in batch_page
