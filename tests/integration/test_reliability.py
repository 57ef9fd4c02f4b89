"""The promises of DESIGN.md "Runs", proven against real PostgreSQL, Redis and celery
processes: a worker killed mid-run, concurrent triggers, a user posting during the
archive, PostgreSQL restarts. The data set has 100,000 scenes."""

import json
import random
import signal
import threading
import time
from datetime import datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Exists, OuterRef, Q
from django.test import Client
from django.utils import timezone

from chronicles.models import Post, Scene, scene_activity_time
from maintenance.engine.enqueue import start
from maintenance.models import MaintenanceRun, RunBatch
from maintenance.tasks import OPERATION_TASKS
from tests.integration.clusters import as_the_test_database, own_cluster
from tests.integration.conftest import LEASE, start_worker

BATCH = 200
Status = MaintenanceRun.Status


def wait_for(probe, timeout=90, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s")


pytestmark = pytest.mark.django_db(transaction=True)


def runs():
    return list(MaintenanceRun.objects.order_by("id"))


def finished(run):
    def probe():
        run.refresh_from_db()
        return run if run.is_finished else None

    return probe


def all_finished(count):
    def probe():
        found = runs()
        return found if len(found) == count and all(r.is_finished for r in found) else None

    return probe


def archived_by_runs(since):
    return set(Scene.objects.filter(archived_at__gte=since).values_list("id", flat=True))


def expected_archive(since, cutoff):
    """What one uninterrupted run with this cutoff archives, judged on the data as it
    was before any run (runs change nothing but archived_at)."""
    recent_post = Post.objects.filter(scene=OuterRef("pk"), created_at__gte=cutoff)
    return set(
        Scene.objects.filter(finished=True)
        .filter(Q(archived_at__isnull=True) | Q(archived_at__gte=since))
        .alias(activity=scene_activity_time())
        .filter(activity__lt=cutoff)
        .exclude(Exists(recent_post))
        .values_list("id", flat=True)
    )


def assert_like_one_uninterrupted_run(since):
    """The archive equals an uninterrupted run's, and every archived scene was archived
    by exactly one committed batch, whose whole change is there."""
    all_runs = runs()
    assert [run.pk for run in all_runs if run.status == Status.RUNNING] == []
    first = next(run for run in all_runs if run.checkpoint)
    cutoff = datetime.fromisoformat(first.checkpoint["context"]["cutoff"])
    archived = archived_by_runs(since)
    assert archived == expected_archive(since, cutoff)
    batches = RunBatch.objects.filter(run__in=all_runs)
    ids = [pk for batch in batches for pk in batch.changed_ids]
    assert len(ids) == len(set(ids)) == len(archived)
    assert set(ids) == archived
    assert sum(run.changed for run in all_runs) == len(archived)
    for batch in batches.order_by("?")[:20]:
        stamps = set(
            Scene.objects.filter(id__in=batch.changed_ids).values_list("archived_at", flat=True)
        )
        assert len(stamps) == 1  # one batch, one UPDATE, all of it committed


def enqueue_archive(**params):
    return start(
        "archive_old_scenes",
        {"batch_size": BATCH, **params},
        trigger=MaintenanceRun.Trigger.CLI,
    )


@pytest.fixture
def worker_env():
    return {"MAINTENANCE_LEASE_SECONDS": str(LEASE)}


# --- 1. a worker killed with SIGKILL in the middle of a run -----------------------


@pytest.mark.parametrize("kill_after", [1, 40, 120])
def test_a_killed_pool_process_is_redelivered_and_resumes(fresh, tmp_path, worker_env, kill_after):
    worker = start_worker(tmp_path, **worker_env)
    try:
        run = enqueue_archive()
        wait_for(lambda: RunBatch.objects.filter(run=run).count() >= kill_after)
        worker.kill_pool()
        wait_for(finished(run))
    finally:
        worker.stop()

    assert run.status == Status.SUCCEEDED, run.error
    assert run.attempts == 2  # the same run, delivered again (acks_late)
    assert "WorkerLostError" in worker.log() or "signal 9" in worker.log()
    assert_like_one_uninterrupted_run(fresh)


@pytest.mark.parametrize("kill_after", [5, 90])
def test_a_killed_worker_is_taken_over_by_the_next_trigger(fresh, tmp_path, worker_env, kill_after):
    first_worker = start_worker(tmp_path / "first", **worker_env)
    dead = enqueue_archive()
    wait_for(lambda: RunBatch.objects.filter(run=dead).count() >= kill_after)
    first_worker.stop(sig=signal.SIGKILL)
    second_worker = start_worker(tmp_path / "second", **worker_env)
    try:
        time.sleep(LEASE + 0.5)  # the dead run's lease runs out
        out = StringIO()
        call_command(
            "run_maintenance",
            "archive_old_scenes",
            f"--batch-size={BATCH}",
            "--wait",
            "--json",
            stdout=out,
        )
    finally:
        second_worker.stop()

    summary = json.loads(out.getvalue())
    dead.refresh_from_db()
    assert summary["status"] == "succeeded"
    assert dead.status == Status.FAILED
    assert f"taken over by run #{summary['run_id']}" in dead.error
    assert MaintenanceRun.objects.get(pk=summary["run_id"]).resumed_from_id == dead.pk
    assert dead.batches >= kill_after
    assert_like_one_uninterrupted_run(fresh)


# --- 2. ten triggers at once ---------------------------------------------------------


def test_ten_triggers_at_once_through_the_worker_run_once(fresh, tmp_path, worker_env):
    from django.contrib.auth import get_user_model
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    admin = get_user_model().objects.create_superuser("root-admin", password="x")
    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    schedule = PeriodicTask.objects.create(
        name="archive nightly",
        task="maintenance.archive_old_scenes",
        interval=every_day,
        kwargs=json.dumps({"batch_size": 100}),
    )
    client = Client()
    client.force_login(admin)
    task = OPERATION_TASKS["archive_old_scenes"]
    # Two processes: one holds the run while the other meets the nine other triggers.
    worker = start_worker(tmp_path, CELERY_WORKER_CONCURRENCY="2", **worker_env)
    try:
        enqueue_archive(batch_size=100)
        for _ in range(4):  # as beat sends them
            task.apply_async(
                kwargs={"batch_size": 100}, headers={"periodic_task_name": "archive nightly"}
            )
        for _ in range(3):
            client.post(
                "/admin/django_celery_beat/periodictask/",
                {"action": "run_tasks", "_selected_action": [schedule.pk]},
            )
        for _ in range(2):
            enqueue_archive(batch_size=100)
        every_run = wait_for(all_finished(10))
    finally:
        worker.stop()

    statuses = [run.status for run in every_run]
    assert statuses.count(Status.SUCCEEDED) == 1 and statuses.count(Status.SKIPPED) == 9
    winner = next(run for run in every_run if run.status == Status.SUCCEEDED)
    assert {run.skipped_because_of_id for run in every_run if run != winner} == {winner.pk}
    assert {run.trigger for run in every_run} == {"cli", "beat", "admin"}
    assert_like_one_uninterrupted_run(fresh)
    PeriodicTask.objects.all().delete()
    get_user_model().objects.filter(pk=admin.pk).delete()


def test_ten_runners_racing_in_threads_run_once(fresh):
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run

    created = [
        create_run("archive_old_scenes", {"batch_size": 500}, trigger="beat") for _ in range(10)
    ]
    barrier = threading.Barrier(10)
    results = {}

    def race(run):
        try:
            barrier.wait(10)
            results[run.pk] = execute(run).status
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(run,)) for run in created]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    outcomes = list(results.values())
    assert (outcomes.count(Status.SUCCEEDED), outcomes.count(Status.SKIPPED)) == (1, 9)
    assert_like_one_uninterrupted_run(fresh)


# --- 5. a user writing posts while archive_old_scenes runs ----------------------------


def test_posts_written_during_the_archive_keep_their_scenes(fresh, tmp_path, worker_env):
    cutoff_guess = timezone.now() - timezone.timedelta(days=90)
    candidates = list(
        Scene.objects.filter(finished=True, archived_at__isnull=True)
        .alias(activity=scene_activity_time())
        .filter(activity__lt=cutoff_guess)
        .values_list("id", "last_activity_at")
    )
    original_activity = dict(candidates)
    ids = [pk for pk, _ in candidates]
    rng = random.Random(5)
    stop = threading.Event()
    writes = []  # (scene id, a moment after the post's transaction committed)

    def write_posts():
        try:
            while not stop.is_set():
                scene_id = rng.choice(ids)
                Post.objects.create(scene_id=scene_id, message="Still here!")
                writes.append((scene_id, timezone.now()))
        finally:
            connection.close()

    worker = start_worker(tmp_path, **worker_env)
    writer = threading.Thread(target=write_posts)
    try:
        writer.start()
        wait_for(lambda: len(writes) > 20)
        run = enqueue_archive(batch_size=100)
        wait_for(finished(run))
    finally:
        stop.set()
        writer.join(30)
        worker.stop()

    try:
        assert run.status == Status.SUCCEEDED, run.error
        archived_at = dict(
            Scene.objects.filter(id__in={pk for pk, _ in writes}).values_list("id", "archived_at")
        )
        archived_after_a_post = [
            (pk, committed)
            for pk, committed in writes
            if archived_at[pk] is not None
            and archived_at[pk] >= fresh
            and archived_at[pk] > committed
        ]
        assert len(writes) > 100
        assert archived_after_a_post == []
    finally:
        Post.objects.filter(created_at__gte=fresh).delete()
        for pk in {pk for pk, _ in writes}:
            Scene.objects.filter(pk=pk).update(last_activity_at=original_activity[pk])


# --- 4. PostgreSQL restarted during a run (a cluster of the test's own) ------------


@pytest.fixture
def restartable(real_services):
    """The test's data on a PostgreSQL cluster of its own, which it may stop and restart
    without disturbing anyone else; requested before `fresh`, which fills it."""
    with own_cluster("tgrestart", "restart") as cluster, as_the_test_database(cluster):
        yield cluster


def test_a_postgres_restart_during_a_run_is_retried(restartable, fresh, tmp_path, worker_env):
    worker = start_worker(tmp_path, **worker_env)
    try:
        run = enqueue_archive(batch_size=100)
        wait_for(lambda: RunBatch.objects.filter(run=run).count() >= 20)
        connection.close()
        restartable.ctl("restart")
        run = wait_for(finished(run))
    finally:
        connection.close()
        worker.stop()

    assert run.status == Status.SUCCEEDED, run.error
    assert "database error" in worker.log() or "retry" in worker.log()
    assert_like_one_uninterrupted_run(fresh)


def test_postgres_down_longer_than_the_retries_then_the_next_trigger_resumes(
    restartable, fresh, tmp_path, worker_env
):
    env = {**worker_env, "MAINTENANCE_DB_RETRIES": "1", "MAINTENANCE_RETRY_BACKOFF": "0.2"}
    worker = start_worker(tmp_path, **env)
    try:
        first = enqueue_archive(batch_size=100)
        wait_for(lambda: RunBatch.objects.filter(run=first).count() >= 10)
        connection.close()
        restartable.ctl("stop")
        time.sleep(4)
        restartable.ctl("start")
        connection.close()
        time.sleep(LEASE + 0.5)
        enqueue_archive(batch_size=100)
        wait_for(lambda: all(run.is_finished for run in runs()) and runs(), timeout=120)
    finally:
        connection.close()
        worker.stop()

    every_run = runs()
    assert any(run.status == Status.SUCCEEDED for run in every_run)
    assert any(run.resumed_from_id or run.attempts > 1 for run in every_run)
    for run in every_run:
        if run.status == Status.FAILED:
            assert run.error and "\n" not in run.error
    assert_like_one_uninterrupted_run(fresh)
