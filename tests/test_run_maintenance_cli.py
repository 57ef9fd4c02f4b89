"""manage.py run_maintenance: listing, flags, --inline, --json, exit codes, errors."""

import json
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from chronicles.models import Scene
from maintenance import operations
from maintenance.models import MaintenanceRun
from maintenance.transfer.format import header_line
from tests import factories

pytestmark = pytest.mark.django_db
JSON_KEYS = {
    # DESIGN.md "Run states and operator control" adds these to the first wave's keys
    "total",
    "rows_per_s",
    "eta_s",
    "stale",
    "throttled_s",
    "throttle_reason",
    "throttled_now",
    "attempts",
    "partitions",
    # ... and "Findings over time, revert and apply" these
    "findings_new",
    "findings_resolved",
    "findings_open",
    # ... and "Scheduling you can trust" these
    "sent_by",
    "triggered_at",
    "skipped_because_of",
    "run_id",
    "operation",
    "status",
    "trigger",
    "dry_run",
    "params",
    "processed",
    "changed",
    "findings",
    "batches",
    "started_at",
    "finished_at",
    "duration_s",
    "error",
}


def run_command(*args):
    out, err = StringIO(), StringIO()
    call_command("run_maintenance", *args, stdout=out, stderr=err)
    return out.getvalue()


def failing(*args):
    with pytest.raises(CommandError) as raised:
        run_command(*args)
    return raised.value


@pytest.fixture
def old_scenes():
    return [factories.scene(name=f"old{i}").id for i in range(5)]


def test_without_an_operation_it_lists_them_with_their_flags():
    text = run_command()
    for operation in operations.all_operations():
        assert operation.name in text
        assert operation.description in text
    assert "--older-than-days" in text and "--chronicle-id" in text


def test_inline_json_has_the_documented_keys(old_scenes):
    summary = json.loads(run_command("archive_old_scenes", "--inline", "--json"))

    assert set(summary) == JSON_KEYS
    assert summary["status"] == "succeeded"
    assert summary["trigger"] == "cli"
    assert summary["params"] == {"older_than_days": 90, "chronicle_id": None}
    assert (summary["processed"], summary["changed"], summary["batches"]) == (5, 5, 1)
    assert summary["error"] is None
    assert summary["duration_s"] >= 0


def test_generated_flags_reach_the_operation(old_scenes):
    chronicle = factories.chronicle()
    inside = factories.scene(chronicle=chronicle, created_days_ago=40)

    summary = json.loads(
        run_command(
            "archive_old_scenes",
            "--older-than-days",
            "30",
            f"--chronicle-id={chronicle.id}",
            "--batch-size",
            "2",
            "--inline",
            "--json",
        )
    )

    assert summary["params"] == {"older_than_days": 30, "chronicle_id": chronicle.id}
    assert summary["changed"] == 1
    assert Scene.objects.get(pk=inside.id).archived_at is not None


def test_dry_run_reports_and_changes_nothing(old_scenes):
    text = run_command("archive_old_scenes", "--inline", "--dry-run")

    assert "would change 5" in text
    assert not Scene.objects.filter(archived_at__isnull=False).exists()
    assert MaintenanceRun.objects.get().dry_run is True


def test_verbosity_2_shows_each_batch(old_scenes):
    text = run_command("archive_old_scenes", "--inline", "--batch-size=2", "-v", "2")
    assert "batch 1 (size 2): processed 2" in text and "batch 3 (size 2): processed 1" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["archive_old_scenes", "--older-than-days", "0"], "older_than_days must be at least 1"),
        (["archive_old_scenes", "--older-than-days", "x"], "must be a whole number, not 'x'"),
        (["archive_old_scenes", "--batch-size", "10001"], "batch_size must be at most 10000"),
        (["archive_old_scenes", "--chronicle-id", "999999"], "chronicle_id 999999 does not exist"),
        (["archive_old_scenes", "--fix"], "unrecognized arguments: --fix"),
        (["no_such_operation"], "invalid choice: 'no_such_operation'"),
    ],
)
def test_bad_usage_exits_2_with_one_line_and_changes_nothing(old_scenes, args, message):
    error = failing(*args, "--inline")

    assert error.returncode == 2
    assert message in str(error)
    assert "\n" not in str(error)
    assert not MaintenanceRun.objects.exists()
    assert not Scene.objects.filter(archived_at__isnull=False).exists()


def test_skipped_exits_3(old_scenes):
    now = timezone.now()
    holder = MaintenanceRun.objects.create(
        operation="archive_old_scenes",
        trigger="beat",
        status="running",
        started_at=now,
        heartbeat_at=now,
        lease_token="other",
    )

    error = failing("archive_old_scenes", "--inline")

    assert error.returncode == 3
    assert f"already running as run #{holder.pk}" in str(error)


def test_a_failed_run_exits_1(old_scenes, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(operations.get("archive_old_scenes"), "run_batch", explode)

    error = failing("archive_old_scenes", "--inline")

    assert error.returncode == 1
    assert "failed: RuntimeError: disk on fire" in str(error)
    assert MaintenanceRun.objects.get().status == "failed"


def test_an_unreachable_broker_exits_1_quickly_and_records_nothing(old_scenes, monkeypatch):
    from celery import current_app

    # Celery reads CELERY_BROKER_URL from the environment before its own setting.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(current_app.conf, "broker_url", "redis://127.0.0.1:1/0")
    started = time.monotonic()

    error = failing("archive_old_scenes")

    assert time.monotonic() - started < 5
    assert error.returncode == 1
    assert "broker at redis://127.0.0.1:1/0 is unreachable" in str(error)
    assert not MaintenanceRun.objects.exists()


def test_a_run_past_its_lease_is_reported_as_taken_over(old_scenes, settings):
    stale = timezone.now() - timedelta(seconds=settings.MAINTENANCE_LEASE_SECONDS * 2)
    dead = MaintenanceRun.objects.create(
        operation="archive_old_scenes",
        trigger="beat",
        status="running",
        started_at=stale,
        heartbeat_at=stale,
        lease_token="dead",
    )

    summary = json.loads(run_command("archive_old_scenes", "--inline", "--json"))

    dead.refresh_from_db()
    assert summary["status"] == "succeeded"
    assert dead.status == "failed" and "taken over" in dead.error


def test_a_relative_path_is_made_absolute_where_the_command_runs(tmp_path, monkeypatch):
    (tmp_path / "chars.jsonl").write_text(header_line() + "\n")
    monkeypatch.chdir(tmp_path)

    for args in (
        ("run_maintenance", "import_characters", "--inline", "--dry-run", "--path", "chars.jsonl"),
        ("import_characters", "chars.jsonl", "--dry-run"),
    ):
        call_command(*args, stdout=StringIO(), stderr=StringIO())

    paths = list(MaintenanceRun.objects.values_list("params__path", flat=True))
    assert paths == [str(tmp_path / "chars.jsonl")] * 2


def test_an_unknown_relative_path_is_refused_naming_its_absolute_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    error = failing("import_characters", "--inline", "--path", "missing\x1b.jsonl")

    assert error.returncode == 2
    assert str(tmp_path / "missing") in str(error) and "\x1b" not in str(error)
    assert not MaintenanceRun.objects.exists()
