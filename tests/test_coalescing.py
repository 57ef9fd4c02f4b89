"""Duplicates coalesce: a run whose work a run of the same operation and parameters did
after it was triggered is skipped naming that run, and one task message makes one run
however often it is delivered (with real processes: tests/integration/
test_scheduling.py)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run, cut_error
from maintenance.models import MaintenanceRun, TaskMessage
from maintenance.schedules import DUE_AT_HEADER, SENT_BY_HEADER
from maintenance.tasks import OPERATION_TASKS
from tests import factories
from tests.factories import task_summary
from tests.properties import HYPOTHESIS
from tests.test_import_export import line, write

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status
xp_task = OPERATION_TASKS["recalculate_xp"]


def _queued(params=None, **origin):
    return create_run("recalculate_xp", params or {}, trigger="cli", **origin)


def test_runs_queued_behind_a_run_that_then_succeeds_are_coalesced_into_it():
    first, *duplicates = [_queued() for _ in range(4)]

    assert execute(first).status == Status.SUCCEEDED
    for duplicate in duplicates:
        duplicate = execute(duplicate)
        assert duplicate.status == Status.SKIPPED
        assert duplicate.skipped_because_of_id == first.pk
        assert duplicate.error.startswith(f"coalesced: run #{first.pk} of recalculate_xp")
        assert duplicate.started_at is None and duplicate.batches == 0


def test_a_trigger_after_the_success_runs_again():
    first = execute(_queued())
    later = _queued()
    assert later.created_at > first.finished_at
    assert execute(later).status == Status.SUCCEEDED


@pytest.mark.parametrize("other", ["chronicle", "dry run"])
def test_only_the_same_operation_and_parameters_coalesce(other):
    params = {"chronicle_id": factories.chronicle().pk} if other == "chronicle" else {}
    waiting = _queued({**params, "dry_run": other == "dry run"})
    done = execute(_queued())
    assert done.status == Status.SUCCEEDED
    assert execute(waiting).status == Status.SUCCEEDED


def test_a_failed_or_skipped_run_does_not_make_others_skip():
    waiting = _queued()
    failed = _queued()
    MaintenanceRun.objects.filter(pk=failed.pk).fail("boom")
    assert execute(waiting).status == Status.SUCCEEDED


def test_a_run_paused_before_it_started_and_resumed_after_a_success_is_coalesced():
    # It did none of the work, and the work was done after it was asked for.
    paused = _queued()
    MaintenanceRun.objects.filter(pk=paused.pk).pause()
    done = execute(_queued())
    MaintenanceRun.objects.filter(pk=paused.pk).resume()
    resumed = execute(MaintenanceRun.objects.get(pk=paused.pk))
    assert (resumed.status, resumed.skipped_because_of_id) == (Status.SKIPPED, done.pk)


def test_an_import_never_coalesces(tmp_path):
    lines = write(tmp_path, line())
    waiting = create_run("import_characters", {"path": str(lines)}, trigger="cli")
    execute(create_run("import_characters", {"path": str(lines)}, trigger="cli"))
    assert execute(waiting).status == Status.SUCCEEDED


def test_a_beat_run_counts_from_its_due_time_not_from_when_a_worker_took_it():
    due = timezone.now() - timedelta(minutes=10)
    done = execute(_queued())
    headers = {
        "periodic_task_name": "xp nightly",
        DUE_AT_HEADER: due.isoformat(),
        SENT_BY_HEADER: "host:1:abc",
    }
    summary = task_summary(xp_task.apply(kwargs={}, headers=headers, task_id="due-10-min-ago"))
    run = MaintenanceRun.objects.get(pk=summary["run_id"])
    assert (run.status, run.skipped_because_of_id) == (Status.SKIPPED, done.pk)
    assert run.triggered_at == due and run.sent_by == "host:1:abc"


def test_one_message_delivered_three_times_makes_one_run():
    summaries = [
        task_summary(xp_task.apply(kwargs={}, task_id="one-message", headers={})) for _ in range(3)
    ]
    assert {s["run_id"] for s in summaries} == {summaries[0]["run_id"]}
    assert MaintenanceRun.objects.count() == 1
    assert TaskMessage.objects.get(task_id="one-message").run_id == summaries[0]["run_id"]


def test_a_rejected_message_delivered_twice_is_one_failed_run():
    for _ in range(2):
        xp_task.apply(kwargs={"chronicle_id": "x"}, task_id="bad-once")
    assert MaintenanceRun.objects.filter(status=Status.FAILED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_taking_copies_of_one_message_at_once_make_one_run(postgresql):
    barrier = threading.Barrier(4)
    seen = []

    def deliver():
        try:
            barrier.wait()
            seen.append(task_summary(xp_task.apply(kwargs={}, task_id="raced")))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(seen) == 4
    assert MaintenanceRun.objects.count() == 1
    assert {s["run_id"] for s in seen} == {MaintenanceRun.objects.get().pk}


hostile = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=80),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from(["2026-13-01T00:00:00", "2026-01-01T00:00:00", "9999-12-31T23:59:59+14:00"]),
)


@HYPOTHESIS
@given(due_at=hostile, sent_by=hostile, task_id=st.text(min_size=1, max_size=300))
def test_hostile_beat_headers_never_break_a_delivery(due_at, sent_by, task_id):
    MaintenanceRun.objects.all().delete()
    TaskMessage.objects.all().delete()
    headers = {"periodic_task_name": "x", DUE_AT_HEADER: due_at, SENT_BY_HEADER: sent_by}
    summary = task_summary(xp_task.apply(kwargs={}, headers=headers, task_id=task_id))
    run = MaintenanceRun.objects.get(pk=summary["run_id"])
    assert run.status == Status.SUCCEEDED
    assert run.sent_by == (cut_error(sent_by)[:200] if isinstance(sent_by, str) else "")
    if run.triggered_at is not None:
        assert run.triggered_at.tzinfo is not None


def test_duplicates_the_sweeper_sent_again_still_coalesce():
    from maintenance.engine.sweeper import sweep

    first, duplicate = _queued(), _queued()
    long_ago = timezone.now() - timedelta(hours=1)
    MaintenanceRun.objects.filter(pk=duplicate.pk).update(created_at=long_ago, queued_at=long_ago)
    assert duplicate.pk in sweep(send=lambda run: None).resent
    execute(first)
    duplicate = execute(MaintenanceRun.objects.get(pk=duplicate.pk))
    assert (duplicate.status, duplicate.skipped_because_of_id) == (Status.SKIPPED, first.pk)


def test_a_late_copy_of_a_beat_message_does_not_run_a_run_sent_anew():
    summary = task_summary(xp_task.apply(kwargs={}, task_id="beat-original"))
    run = MaintenanceRun.objects.get(pk=summary["run_id"])
    # Re-queued after a slice: the run now answers to a new message only.
    MaintenanceRun.objects.filter(pk=run.pk).update(
        status=Status.QUEUED, celery_task_id="sent-anew", finished_at=None
    )
    task_summary(xp_task.apply(kwargs={}, task_id="beat-original"))
    run.refresh_from_db()
    assert run.status == Status.QUEUED and run.attempts == 1


@pytest.mark.parametrize(
    "due_at",
    [
        timedelta(days=30),  # the future: would make beat skip the schedule
        -timedelta(days=30),  # long ago: would coalesce into any old success
    ],
)
def test_a_due_time_out_of_bounds_is_ignored(due_at):
    forged = (timezone.now() + due_at).isoformat()
    headers = {"periodic_task_name": "x", DUE_AT_HEADER: forged}
    summary = task_summary(xp_task.apply(kwargs={}, headers=headers, task_id="forged"))
    run = MaintenanceRun.objects.get(pk=summary["run_id"])
    assert run.triggered_at is None and run.status == Status.SUCCEEDED
    assert TaskMessage.objects.get(task_id="forged").due_at is None


def test_a_due_time_counts_only_for_a_schedule_message():
    headers = {DUE_AT_HEADER: timezone.now().isoformat()}
    summary = task_summary(xp_task.apply(kwargs={}, headers=headers, task_id="api"))
    assert MaintenanceRun.objects.get(pk=summary["run_id"]).triggered_at is None
