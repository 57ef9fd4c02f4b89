"""The run page and the lists it links to, as an operator reads them: links to batches
(newest first, durations in ms), findings by rule, the schedule and related runs;
findings linking to their rows with before -> after inline and a dry-run marker; the
live progress JSON the page polls. SQLite and PostgreSQL."""

import html
import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicles.models import Character
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun
from tests import factories
from tests.properties import HYPOTHESIS

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status


def viewer(client, *codenames):
    user = get_user_model().objects.create_user("reader", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def page(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def run_page(client, run):
    return page(client, reverse("admin:maintenance_maintenancerun_change", args=[run.pk]))


@pytest.fixture
def fixed_run():
    for i in range(6):
        Character.objects.create(name=f"c{i}", willpower=20 if i < 4 else 5)
    run = create_run(
        "validate_data_integrity",
        {"fix": True, "rules": ["character_trait_out_of_range"], "batch_size": 2},
        trigger="cli",
    )
    return execute(run)


def test_the_run_page_links_to_its_batches_findings_and_related_runs(client, fixed_run):
    viewer(client, "view_maintenancerun", "view_runbatch", "view_finding")
    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    nightly = PeriodicTask.objects.create(
        name="nightly check", task="maintenance.validate_data_integrity", interval=every_day
    )
    later = MaintenanceRun.objects.create(
        operation="validate_data_integrity",
        trigger="beat",
        periodic_task_name=nightly.name,
        status=Status.SKIPPED,
        skipped_because_of=fixed_run,
        resumed_from=fixed_run,
    )

    text = run_page(client, fixed_run)
    batches = reverse("admin:maintenance_runbatch_changelist") + f"?run__id__exact={fixed_run.pk}"
    assert f'href="{batches}"' in text and f"{fixed_run.batches} batches, newest first" in text
    findings = reverse("admin:maintenance_finding_changelist")
    assert f"{findings}?run__id__exact={fixed_run.pk}&rule=character_trait_out_of_range" in text
    assert "4 fixed" in text
    later_url = reverse("admin:maintenance_maintenancerun_change", args=[later.pk])
    assert text.count(f'href="{later_url}"') == 2  # resumed by, and skipped because of it

    text = run_page(client, later)
    schedule_url = reverse("admin:django_celery_beat_periodictask_change", args=[nightly.pk])
    assert f'href="{schedule_url}"' in text
    assert f"#{fixed_run.pk} validate_data_integrity (succeeded)" in text


def test_batches_are_listed_newest_first_in_milliseconds(client, fixed_run):
    viewer(client, "view_runbatch", "view_maintenancerun")
    text = page(client, reverse("admin:maintenance_runbatch_changelist"))
    assert "Run batches" in text and "Run batchs" not in text
    numbers = [int(part.split("<")[0]) for part in text.split("batch ")[1:] if part[:1].isdigit()]
    assert numbers[: fixed_run.batches] == sorted(numbers[: fixed_run.batches], reverse=True)
    assert " ms<" in text


def test_findings_link_to_their_rows_with_before_and_after_and_a_dry_run_marker(client, fixed_run):
    viewer(client, "view_finding", "view_maintenancerun")
    Character.objects.filter(pk=Character.objects.first().pk).update(xp=3)
    preview = execute(create_run("recalculate_xp", {"dry_run": True}, trigger="cli"))
    text = page(client, reverse("admin:maintenance_finding_changelist"))
    character = fixed_run.finding_set.first().object_id
    row_url = reverse("admin:chronicles_character_change", args=[character])
    assert f'href="{row_url}"' in text
    assert "willpower 20 → 10" in text
    assert "xp 3 → 0" in text  # the dry run's plan, inline
    dry = page(client, reverse("admin:maintenance_finding_changelist") + "?run__dry_run__exact=1")
    assert "xp 3 → 0" in dry and "willpower 20 → 10" not in dry
    assert preview.dry_run


def progress(client, run):
    return client.get(reverse("admin:maintenance_maintenancerun_progress", args=[run.pk]))


def test_the_live_progress_json_follows_the_run(client):
    viewer(client, "view_maintenancerun")
    running = MaintenanceRun.objects.create(
        operation="archive_old_scenes",
        trigger="cli",
        status=Status.RUNNING,
        total=200,
        processed=50,
        work_seconds=2.0,
        heartbeat_at=timezone.now(),
        started_at=timezone.now() - timedelta(seconds=3),
    )
    answer = progress(client, running).json()
    assert answer["status"] == "running" and answer["percent"] == 25
    assert answer["eta_s"] == 6.0 and not answer["finished"]
    assert "50 / 200 (25%)" in answer["progress_text"] and "ETA 6s" in answer["progress_text"]
    assert 'progress.json"' in run_page(client, running)  # the page polls while it runs

    MaintenanceRun.objects.filter(pk=running.pk).update(status=Status.SUCCEEDED, processed=200)
    answer = progress(client, running).json()
    assert answer["finished"] and answer["percent"] == 100
    assert "progress.json" not in run_page(client, MaintenanceRun.objects.get(pk=running.pk))


def test_the_progress_json_needs_the_view_permission_and_a_run(client):
    run = MaintenanceRun.objects.create(operation="archive_old_scenes", trigger="cli")
    assert progress(client, run).status_code == 302  # to the login page
    viewer(client)
    assert progress(client, run).status_code == 403
    client.logout()
    seer = get_user_model().objects.create_user("seer", password="pw", is_staff=True)
    seer.user_permissions.set(Permission.objects.filter(codename="view_maintenancerun"))
    client.force_login(seer)
    assert progress(client, run).status_code == 200
    missing = client.get(f"/admin/maintenance/maintenancerun/{run.pk + 1000}/progress.json")
    assert missing.status_code == 404


@settings(HYPOTHESIS, max_examples=25)
@given(
    status=st.sampled_from(list(Status.values)),
    processed=st.integers(0, 10**12),
    total=st.one_of(st.none(), st.integers(0, 10**12)),
    work=st.floats(0, 10**6, allow_nan=False),
    throttled=st.floats(0, 10**6, allow_nan=False),
    reason=st.text(max_size=200).filter(lambda t: "\x00" not in t),
)
def test_the_run_page_and_its_json_never_fail_whatever_the_counters(
    admin_client, status, processed, total, work, throttled, reason
):
    run = MaintenanceRun.objects.create(
        operation="archive_old_scenes",
        trigger="cli",
        status=status,
        processed=processed,
        total=total,
        work_seconds=work,
        throttled_s=throttled,
        throttle_reason=reason,
        throttled_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    assert (
        admin_client.get(
            reverse("admin:maintenance_maintenancerun_change", args=[run.pk])
        ).status_code
        == 200
    )
    answer = admin_client.get(reverse("admin:maintenance_maintenancerun_progress", args=[run.pk]))
    assert answer.status_code == 200
    body = json.loads(answer.content)
    assert body["percent"] is None or 0 <= body["percent"] <= 100
    factories.scene()  # and the lists stay up with it
    assert admin_client.get(reverse("admin:maintenance_runbatch_changelist")).status_code == 200
