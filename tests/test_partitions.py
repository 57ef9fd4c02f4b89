"""Partitions: one run split into id ranges, each worked like a run of its own, the run
following them (fan-in through the database). Runs on SQLite and PostgreSQL; the real
workers are in tests/integration/test_partitioned_runs.py."""

import contextlib
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicles.models import Scene
from chronicles.testdata.generator import Options, generate
from maintenance import operations
from maintenance.engine import control, partitions
from maintenance.engine.runner import Budget, execute
from maintenance.engine.runs import create_run
from maintenance.engine.sweeper import sweep
from maintenance.engine.triggers import run_from_task
from maintenance.models import Finding, MaintenanceRun, RunBatch, RunPartition
from maintenance.operations.base import ParameterError
from maintenance.reporting import partition_lines, run_summary
from tests.factories import days_ago
from tests.properties import HYPOTHESIS

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status


def scenes(old=60, recent=15):
    Scene.objects.bulk_create(
        [Scene(name=f"old{i}", finished=True, created_at=days_ago(200)) for i in range(old)]
        + [Scene(name=f"new{i}", finished=True, created_at=days_ago(5)) for i in range(recent)]
    )
    return set(Scene.objects.filter(name__startswith="old").values_list("id", flat=True))


def archived():
    return set(Scene.objects.filter(archived_at__isnull=False).values_list("id", flat=True))


def new_run(operation="archive_old_scenes", **raw):
    return create_run(operation, raw, trigger=MaintenanceRun.Trigger.CLI)


def batch_ids(run):
    ids = []
    for changed in RunBatch.objects.filter(run=run).values_list("changed_ids", flat=True):
        ids.extend(changed)
    return ids


# --- the ranges ------------------------------------------------------------------------


@HYPOTHESIS
@given(
    lower=st.integers(1, 10**12),
    width=st.integers(1, 10**9),
    parts=st.integers(1, 64),
)
def test_ranges_are_contiguous_cover_every_id_and_stay_open_at_the_ends(lower, width, parts):
    upper = lower + width - 1
    ranges = partitions.split((lower, upper), parts)
    assert len(ranges) == parts
    assert ranges[0][0] is None and ranges[-1][1] is None
    for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False):
        assert low == high + 1  # no gap, no overlap
    for low, high in ranges:
        if low is not None and high is not None:
            assert low <= high + 1  # empty ranges only where ids are fewer than parts


def test_an_empty_table_gives_the_first_partition_everything():
    assert partitions.split((None, None), 3) == [(None, None), (1, 0), (1, 0)]


# --- a partitioned run does what one run does ----------------------------------------


@pytest.mark.parametrize("count", [2, 4, 7])
def test_a_partitioned_archive_archives_each_eligible_scene_exactly_once(count):
    eligible = scenes()
    run = execute(new_run(partitions=count, batch_size=4))

    assert run.status == Status.SUCCEEDED
    assert archived() == eligible
    ids = batch_ids(run)
    assert sorted(ids) == sorted(eligible)  # every archived scene in exactly one batch
    parts = list(run.partition_set.order_by("number"))
    assert [p.number for p in parts] == list(range(1, count + 1))
    assert {p.status for p in parts} == {Status.SUCCEEDED}
    assert run.processed == sum(p.processed for p in parts)
    assert run.changed == sum(p.changed for p in parts) == len(eligible)
    assert run.batches == sum(p.batches for p in parts) == RunBatch.objects.filter(run=run).count()
    assert run.total == len(eligible)


def test_partitions_keep_to_their_ranges():
    scenes(old=40, recent=0)
    run = execute(new_run(partitions=4, batch_size=3))
    for part in run.partition_set.all():
        ids = [
            pk
            for changed in RunBatch.objects.filter(run=run, partition=part.number).values_list(
                "changed_ids", flat=True
            )
            for pk in changed
        ]
        assert all(part.lower_id is None or pk >= part.lower_id for pk in ids)
        assert all(part.upper_id is None or pk <= part.upper_id for pk in ids)


@pytest.mark.parametrize("operation", ["validate_data_integrity", "recalculate_xp"])
def test_a_partitioned_check_finds_what_one_run_finds(operation):
    generate(Options(seed=5, chronicles=3, characters=80, scenes=200, defect_rate=0.08))
    whole = execute(new_run(operation, dry_run=True))
    split = execute(new_run(operation, dry_run=True, partitions=3, batch_size=2))

    def found(run):
        return sorted(Finding.objects.filter(run=run).values_list("rule", "object_id"))

    assert split.status == Status.SUCCEEDED
    assert found(split) == found(whole)
    assert split.findings == whole.findings > 0


def test_import_cannot_be_split():
    with pytest.raises(ParameterError, match="import_characters cannot be split"):
        operations.get("import_characters").clean({"path": "/tmp/x", "partitions": 2})
    with pytest.raises(CommandError) as refused:
        call_command(
            "run_maintenance",
            "import_characters",
            "--path",
            "/tmp/x",
            "--partitions",
            "2",
            "--inline",
            stdout=StringIO(),
            stderr=StringIO(),
        )
    assert refused.value.returncode == 2
    assert not MaintenanceRun.objects.exists()


@pytest.mark.parametrize("bad", ["0", "65", "-1", "two", "1.5"])
def test_partitions_outside_1_to_64_are_refused_with_one_line(bad):
    with pytest.raises(CommandError) as refused:
        call_command(
            "run_maintenance",
            "archive_old_scenes",
            "--partitions",
            bad,
            "--inline",
            stdout=StringIO(),
            stderr=StringIO(),
        )
    assert refused.value.returncode == 2
    assert "partitions" in str(refused.value)
    assert not MaintenanceRun.objects.exists()


def test_the_json_and_show_list_the_partitions():
    scenes(old=20, recent=0)
    out = StringIO()
    call_command(
        "run_maintenance",
        "archive_old_scenes",
        "--partitions",
        "3",
        "--inline",
        "--json",
        stdout=out,
    )
    summary = json.loads(out.getvalue())
    assert summary["status"] == "succeeded"
    assert [p["number"] for p in summary["partitions"]] == [1, 2, 3]
    assert sum(p["processed"] for p in summary["partitions"]) == summary["processed"] == 20
    assert {p["status"] for p in summary["partitions"]} == {"succeeded"}

    shown = StringIO()
    call_command("maintenance_run", "show", str(summary["run_id"]), stdout=shown)
    text = shown.getvalue()
    assert "in 3 partitions" in text
    assert "partition 1 (ids start.." in text and "..end) | succeeded" in text


# --- operator control, failures, the sweeper -----------------------------------------


def ctrl_c_after(batches):
    def on_batch(report):
        if report.number == batches:
            raise KeyboardInterrupt

    return on_batch


def test_ctrl_c_pauses_the_whole_run_and_resume_finishes_it():
    eligible = scenes()
    run = new_run(partitions=3, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        execute(run, on_batch=ctrl_c_after(2))
    run.refresh_from_db()
    assert run.status == Status.PAUSED
    statuses = set(run.partition_set.values_list("status", flat=True))
    assert statuses == {Status.PAUSED}

    run = execute(control.resume(run, send=None))
    assert run.status == Status.SUCCEEDED
    assert archived() == eligible
    assert sorted(batch_ids(run)) == sorted(eligible)


def test_cancel_cancels_every_partition_and_keeps_whole_batches():
    scenes()
    run = new_run(partitions=3, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        execute(run, on_batch=ctrl_c_after(1))
    run = control.cancel(MaintenanceRun.objects.get(pk=run.pk))
    assert run.status == Status.CANCELLED
    assert set(run.partition_set.values_list("status", flat=True)) == {Status.CANCELLED}
    assert archived() == set(batch_ids(run))


def test_a_failed_partition_fails_the_run_and_is_resumed_alone(monkeypatch):
    eligible = scenes(old=60)
    run = new_run(partitions=3, batch_size=5)
    second = run.partition_set.get(number=2)
    archive = operations.get("archive_old_scenes")
    real = archive.process
    broken = {"on": True}

    def process(ctx, batch):
        if broken["on"] and ctx.bounds == second.bounds:
            raise RuntimeError("disk on fire")
        return real(ctx, batch)

    monkeypatch.setattr(archive, "process", process)
    run = execute(run)

    assert run.status == Status.FAILED
    assert "partition 2: RuntimeError: disk on fire" in run.error
    statuses = dict(run.partition_set.values_list("number", "status"))
    assert statuses == {1: Status.SUCCEEDED, 2: Status.FAILED, 3: Status.SUCCEEDED}
    done_before = dict(run.partition_set.values_list("number", "batches"))

    broken["on"] = False
    run = execute(control.resume(run, send=None))

    assert run.status == Status.SUCCEEDED, run.error
    assert archived() == eligible
    after = dict(run.partition_set.values_list("number", "batches"))
    assert after[1] == done_before[1] and after[3] == done_before[3]  # not redone
    assert sorted(batch_ids(run)) == sorted(eligible)


def test_a_killed_partition_is_swept_and_only_it_goes_on():
    eligible = scenes(old=60)
    run = new_run(partitions=2, batch_size=5)
    first = run.partition_set.get(number=1)
    with pytest.raises(KeyboardInterrupt):
        execute(first, on_batch=ctrl_c_after(2))
    # As a SIGKILLed worker leaves it: running, its heartbeat older than the lease.
    RunPartition.objects.filter(pk=first.pk).update(
        status=Status.RUNNING, lease_token="dead", heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    MaintenanceRun.objects.filter(pk=run.pk).update(status=Status.RUNNING)
    sent = []
    sweep(send=sent.append)

    first.refresh_from_db()
    assert first.status == Status.QUEUED
    assert [unit.pk for unit in sent] == [first.pk]
    for partition in run.partition_set.order_by("number"):
        execute(partition)
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert archived() == eligible
    assert sorted(batch_ids(run)) == sorted(eligible)


def test_a_second_trigger_is_skipped_while_a_partitioned_run_holds_the_operation():
    scenes()
    run = new_run(partitions=2, batch_size=5)
    with pytest.raises(KeyboardInterrupt):
        execute(run.partition_set.get(number=1), on_batch=ctrl_c_after(1))
    MaintenanceRun.objects.filter(pk=run.pk).update(status=Status.RUNNING)
    RunPartition.objects.filter(run=run).update(status=Status.QUEUED)

    other = execute(new_run())
    assert other.status == Status.SKIPPED
    assert other.skipped_because_of_id == run.pk


def test_a_beat_message_fans_out_and_partition_messages_run_their_partition():
    eligible = scenes()
    sent = []
    summary = run_from_task(
        "archive_old_scenes",
        {"partitions": 3, "batch_size": 7},
        task_id="beat-1",
        headers={"periodic_task_name": "archive nightly"},
        send=sent.append,
    )
    assert summary["status"] == "queued"
    assert len(summary["partitions"]) == 3
    run = MaintenanceRun.objects.get(pk=summary["run_id"])
    assert sent == [run] or [getattr(u, "pk", None) for u in sent] == [run.pk]
    for number in (1, 2, 3):
        result = run_from_task(
            "archive_old_scenes",
            {"run_id": run.pk, "partition": number},
            task_id=None,
            headers={},
        )
        assert result["partition"]["number"] == number
        assert result["partition"]["status"] == "succeeded"
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert archived() == eligible


def test_a_message_for_a_partition_that_does_not_exist_is_a_failed_run():
    summary = run_from_task(
        "archive_old_scenes", {"run_id": 999, "partition": 1}, task_id="x", headers={}
    )
    assert summary["status"] == "failed"
    assert "no such run partition" in summary["error"]


def test_partition_lines_name_each_range():
    scenes(old=10, recent=0)
    run = execute(new_run(partitions=2))
    lines = partition_lines(run)
    assert len(lines) == 2
    assert lines[0].startswith("  partition 1 (ids start..")
    assert run_summary(run)["partitions"][1]["upper_id"] is None


def test_the_admin_run_page_lists_the_partitions_and_offers_resume_of_a_failed_one(
    admin_client, monkeypatch
):
    scenes(old=30, recent=0)
    run = new_run(partitions=3, batch_size=5)
    archive = operations.get("archive_old_scenes")
    real = archive.process
    second = run.partition_set.get(number=2)

    def process(ctx, batch):
        if ctx.bounds == second.bounds:
            raise RuntimeError("disk on fire")
        return real(ctx, batch)

    monkeypatch.setattr(archive, "process", process)
    run = execute(run)
    assert run.status == Status.FAILED

    page = admin_client.get(f"/admin/maintenance/maintenancerun/{run.pk}/change/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Run partitions" in text or "run partitions" in text.lower()
    assert "disk on fire" in text
    assert 'value="resume"' in text
    assert 'value="pause"' not in text

    single = execute(new_run())
    page = admin_client.get(f"/admin/maintenance/maintenancerun/{single.pk}/change/")
    assert "run partitions" not in page.content.decode().lower()  # no inline for one


@settings(HYPOTHESIS, max_examples=15)
@given(
    old=st.integers(0, 60),
    recent=st.integers(0, 10),
    count=st.integers(1, 9),
    batch=st.integers(1, 12),
    stops=st.lists(st.integers(1, 6), max_size=3),
    operator=st.sampled_from(["ctrl-c", "pause"]),
)
def test_any_split_and_any_interruptions_archive_each_scene_exactly_once(
    old, recent, count, batch, stops, operator
):
    MaintenanceRun.objects.all().delete()
    Scene.objects.all().delete()
    eligible = scenes(old=old, recent=recent)
    run = new_run(partitions=count, batch_size=batch)
    for stop in stops:
        if operator == "ctrl-c":
            with contextlib.suppress(KeyboardInterrupt):
                run = execute(run, on_batch=ctrl_c_after(stop))
        else:

            def pause_after(report, stop=stop, run_id=run.pk):
                if report.number == stop:
                    # Refused once the run has ended: a pause that comes too late.
                    with contextlib.suppress(control.NotAllowed):
                        control.pause(MaintenanceRun.objects.get(pk=run_id))

            run = execute(run, on_batch=pause_after)
        run = MaintenanceRun.objects.get(pk=run.pk)
        if run.status == Status.PAUSED:
            run = control.resume(run, send=None)
    run = execute(MaintenanceRun.objects.get(pk=run.pk))

    assert run.status == Status.SUCCEEDED, (run.status, run.error)
    assert archived() == eligible
    assert sorted(batch_ids(run)) == sorted(eligible)
    assert run.batches == RunBatch.objects.filter(run=run).count()
    if count > 1:
        parts = list(run.partition_set.all())
        assert run.processed == sum(p.processed for p in parts)


def test_pause_and_resume_cycles_with_progress_never_give_the_run_up():
    scenes(old=100, recent=0)
    run = new_run(partitions=2, batch_size=2)
    for _ in range(12):  # more than MAINTENANCE_MAX_ATTEMPTS
        execute(run.partition_set.get(number=1), budget=Budget(slice_seconds=0))
        run.refresh_from_db()
        assert run.status == Status.RUNNING, run.error
        control.pause(run)
        run = control.resume(MaintenanceRun.objects.get(pk=run.pk), send=None)
    assert run.status == Status.QUEUED and run.idle_attempts == 0


def running(run):
    MaintenanceRun.objects.filter(pk=run.pk).update(
        status=Status.RUNNING, heartbeat_at=timezone.now()
    )
    RunPartition.objects.filter(run=run, number=1).update(
        status=Status.RUNNING, heartbeat_at=timezone.now(), lease_token="x"
    )


def test_a_new_partitioned_trigger_is_skipped_like_any_while_another_run_holds_it():
    scenes()
    first = new_run(partitions=2, batch_size=5)
    running(first)
    second = new_run(partitions=2, batch_size=5)
    execute(second.partition_set.get(number=1))
    second.refresh_from_db()
    assert second.status == Status.SKIPPED, second.error
    assert second.skipped_because_of_id == first.pk
    assert set(second.partition_set.values_list("status", flat=True)) == {Status.CANCELLED}


def test_a_new_partitioned_trigger_yields_to_a_paused_run_like_any():
    scenes()
    paused = new_run(batch_size=5)
    with pytest.raises(KeyboardInterrupt):
        execute(paused, on_batch=ctrl_c_after(1))
    assert MaintenanceRun.objects.get(pk=paused.pk).status == Status.PAUSED
    second = new_run(partitions=2, batch_size=5)
    execute(second.partition_set.get(number=1))
    second.refresh_from_db()
    assert second.status == Status.SKIPPED, second.error
    assert f"run #{paused.pk}" in second.error
