"""Operator control and runs that recover by themselves, with real celery worker and beat
processes, PostgreSQL and Redis: pause (across a worker restart), resume, cancel,
SIGTERM and SIGKILL of the worker with no new trigger, slices, and commands racing."""

import contextlib
import os
import random
import signal
import threading
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from maintenance.engine import control
from maintenance.engine.enqueue import send
from maintenance.models import RunBatch
from tests.integration.conftest import LEASE, start_worker
from tests.integration.test_reliability import (
    Status,
    archived_by_runs,
    assert_like_one_uninterrupted_run,
    enqueue_archive,
    finished,
    runs,
    wait_for,
)
from tests.services import CeleryProcess

pytestmark = pytest.mark.django_db(transaction=True)
WORKER_ENV = {"MAINTENANCE_LEASE_SECONDS": str(LEASE)}


def batches_of(run):
    return RunBatch.objects.filter(run=run).count()


def status_is(run, *statuses):
    def probe():
        run.refresh_from_db()
        return run if run.status in statuses else None

    return probe


def assert_whole_batches_only(since, run):
    """What is archived is exactly what the committed batches say, nothing half-done."""
    ids = [pk for batch in RunBatch.objects.filter(run=run) for pk in batch.changed_ids]
    assert len(ids) == len(set(ids))
    assert archived_by_runs(since) == set(ids)
    numbers = list(RunBatch.objects.filter(run=run).values_list("number", flat=True))
    assert numbers == list(range(1, len(numbers) + 1))
    run.refresh_from_db()
    assert run.batches == len(numbers)


def test_pause_holds_across_a_worker_restart_and_resume_finishes_it(fresh, tmp_path):
    worker = start_worker(tmp_path / "first", **WORKER_ENV)
    try:
        run = enqueue_archive()
        wait_for(lambda: batches_of(run) >= 5)
        control.pause(run)
        wait_for(status_is(run, Status.PAUSED), timeout=30)
        paused_at = batches_of(run)
        time.sleep(1.5)
        assert batches_of(run) == paused_at  # no batch commits while paused
    finally:
        worker.stop()
    worker = start_worker(tmp_path / "second", **WORKER_ENV)
    try:
        time.sleep(1.5)
        run.refresh_from_db()
        assert run.status == Status.PAUSED and batches_of(run) == paused_at
        control.resume(run, send=send)
        wait_for(finished(run))
    finally:
        worker.stop()

    assert run.status == Status.SUCCEEDED, run.error
    assert run.attempts == 2 and len(runs()) == 1
    assert_like_one_uninterrupted_run(fresh)


def test_cancel_stops_at_a_batch_boundary(fresh, tmp_path):
    worker = start_worker(tmp_path, **WORKER_ENV)
    try:
        run = enqueue_archive()
        wait_for(lambda: batches_of(run) >= 5)
        control.cancel(run)
        wait_for(finished(run), timeout=30)
        time.sleep(0.5)
    finally:
        worker.stop()

    assert run.status == Status.CANCELLED and run.finished_at is not None
    assert 5 <= run.batches < run.total // 200
    assert_whole_batches_only(fresh, run)


def test_sigterm_gives_the_run_back_and_the_next_worker_finishes_it(fresh, tmp_path):
    worker = start_worker(tmp_path / "first", **WORKER_ENV)
    run = enqueue_archive()
    wait_for(lambda: batches_of(run) >= 5)
    # What `docker stop` does: SIGTERM to the main process only (a warm shutdown).
    os.kill(worker.process.pid, signal.SIGTERM)
    worker.process.wait(30)
    worker.stop()
    run.refresh_from_db()
    assert run.status == Status.QUEUED  # interrupted at a boundary, back on the queue
    assert "asked 1 runs to stop" in worker.log()

    second = start_worker(tmp_path / "second", **WORKER_ENV)
    try:
        wait_for(finished(run))
    finally:
        second.stop()

    assert run.status == Status.SUCCEEDED, run.error
    assert run.attempts == 2 and len(runs()) == 1  # the same run, no new trigger
    assert_like_one_uninterrupted_run(fresh)


def sweep_every_second():
    """The heartbeat (and so the sweeper) every second instead of every minute."""
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="Heartbeat (test)", task="maintenance.heartbeat", interval=every_second
    )


def test_a_sigkilled_worker_s_run_is_swept_and_finished_with_no_new_trigger(fresh, tmp_path):
    sweep_every_second()
    first = start_worker(tmp_path / "first", **WORKER_ENV)
    run = enqueue_archive()
    wait_for(lambda: batches_of(run) >= 5)
    first.stop(sig=signal.SIGKILL)  # the whole worker, pool and all
    killed_at = time.monotonic()
    beat = CeleryProcess("beat", tmp_path).start()
    second = start_worker(tmp_path / "second", **WORKER_ENV)
    try:
        wait_for(finished(run), timeout=180)
    finally:
        second.stop()
        beat.stop()

    assert time.monotonic() - killed_at < 180
    assert run.status == Status.SUCCEEDED, run.error
    assert len(runs()) == 1 and run.attempts == 2
    assert_like_one_uninterrupted_run(fresh)


def test_a_run_longer_than_its_slice_takes_turns_and_finishes(fresh, tmp_path):
    worker = start_worker(tmp_path, **WORKER_ENV, MAINTENANCE_SLICE_SECONDS="1")
    try:
        run = enqueue_archive()
        wait_for(finished(run))
    finally:
        worker.stop()

    assert run.status == Status.SUCCEEDED, run.error
    assert run.attempts >= 3, "the run never gave its worker back"
    assert run.idle_attempts == 0 and len(runs()) == 1
    assert_like_one_uninterrupted_run(fresh)


def test_ten_racing_commands_leave_one_consistent_state(fresh, tmp_path):
    worker = start_worker(tmp_path, **WORKER_ENV)
    try:
        run = enqueue_archive()
        wait_for(lambda: batches_of(run) >= 3)
        outcomes = []

        def operator(seed):
            chooser = random.Random(seed)
            time.sleep(chooser.random() * 0.5)
            action = chooser.choice(["pause", "resume", "cancel", "pause", "resume"])
            try:
                call_command("maintenance_run", action, str(run.pk), stdout=StringIO())
                outcomes.append((action, "ok"))
            except CommandError as refused:
                assert refused.returncode == 2 and "cannot" in str(refused)
                outcomes.append((action, "refused"))
            finally:
                connection.close()

        threads = [threading.Thread(target=operator, args=(seed,)) for seed in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Whatever the race left, the operator's last word is cancel.
        wait_for(status_is(run, *Status.values), timeout=5)
        with contextlib.suppress(control.NotAllowed):  # finished or cancelled already
            control.cancel(run)
        wait_for(finished(run))
        time.sleep(LEASE + 1)  # any duplicate message has had its chance
    finally:
        worker.stop()

    run.refresh_from_db()
    assert len(outcomes) == 10
    assert run.status in (Status.CANCELLED, Status.SUCCEEDED)
    assert len(runs()) == 1
    assert_whole_batches_only(fresh, run)
    logged = RunBatch.objects.filter(run=run)
    assert run.processed == sum(batch.processed for batch in logged)
    assert run.changed == sum(batch.changed for batch in logged)
