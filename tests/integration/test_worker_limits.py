"""Time limits belong to the worker, with a real `celery worker`, PostgreSQL and Redis.

The worker runs with a soft limit of 3 s, a hard one of 10 s and 1 s slices; this test
process, the sender, has the default settings (3300 s and 3600 s). Every scene is held
locked by another session, as the application might hold a row, so the run's first batch
waits on a lock longer than the soft limit. Its message carries the sender's limits
(what beat or an older release sends) or tiny ones: either way the worker's soft limit
interrupts the run after 3 s, the run goes back on the queue, and once the lock is
released it finishes. Before, the message's limits applied: 3300 s of waiting, or a
pool process killed after 2 s."""

import contextlib
import time
import uuid

import psycopg
import pytest
from celery import current_app
from django.conf import settings

from chronicles.models import Scene
from chronicles.testdata.generator import Options, generate
from maintenance.engine.runs import create_run
from maintenance.engine.triggers import REQUESTED_BY_HEADER, TRIGGER_HEADER
from maintenance.models import MaintenanceRun
from tests.integration.conftest import empty_test_broker, start_worker
from tests.services import database_url_for_subprocess

pytestmark = pytest.mark.django_db(transaction=True)
Status = MaintenanceRun.Status
SOFT, HARD, SLICE = 3, 10, 1
TASK = "maintenance.archive_old_scenes"
WORKER_ENV = {
    "CELERY_TASK_SOFT_TIME_LIMIT": str(SOFT),
    "CELERY_TASK_TIME_LIMIT": str(HARD),
    "MAINTENANCE_SLICE_SECONDS": str(SLICE),
    # A batch that meets a locked row waits for it past the soft limit (not past the hard).
    "MAINTENANCE_LOCK_TIMEOUT_MS": "8000",
    "CELERY_WORKER_CONCURRENCY": "1",
}


@pytest.fixture(scope="module")
def limited_worker(real_services, django_db_setup, tmp_path_factory):
    empty_test_broker()
    worker = start_worker(tmp_path_factory.mktemp("limited"), **WORKER_ENV)
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def old_scenes(real_services):
    generate(
        Options(
            seed=17,
            chronicles=2,
            characters=20,
            scenes=2_000,
            posts_per_scene=1,
            ledger_entries=1,
            defect_rate=0,
        )
    )


@contextlib.contextmanager
def every_scene_locked():
    """Another session holds every scene's row lock until the block ends."""
    with psycopg.connect(database_url_for_subprocess()) as holder:
        holder.execute(f"SELECT id FROM {Scene._meta.db_table} FOR UPDATE")
        try:
            yield
        finally:
            holder.rollback()


def send_with_limits(run: MaintenanceRun, hard: float, soft: float) -> None:
    """Publish the run as enqueue does, except that the message carries these limits."""
    current_app.tasks[TASK].apply_async(
        kwargs={"run_id": run.pk},
        task_id=run.celery_task_id,
        headers={TRIGGER_HEADER: run.trigger, REQUESTED_BY_HEADER: run.requested_by},
        ignore_result=True,
        retry=False,
        time_limit=hard,
        soft_time_limit=soft,
    )


def wait_until(probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s")


def started_twice(run):
    def probe():
        run.refresh_from_db()
        return run.attempts >= 2

    return probe


def finished(run):
    def probe():
        run.refresh_from_db()
        return run.is_finished

    return probe


def test_the_worker_says_which_limits_it_applies(limited_worker):
    limited_worker.wait_for_log(
        f"soft {SOFT}s (CELERY_TASK_SOFT_TIME_LIMIT), hard {HARD}s (CELERY_TASK_TIME_LIMIT); "
        f"a run gives its process back after {SLICE}s (MAINTENANCE_SLICE_SECONDS)",
        timeout=5,
    )


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param("sender", id="the-senders-3300s"),
        pytest.param((2, 1), id="tiny-limits"),
    ],
)
def test_a_run_is_interrupted_by_the_workers_soft_limit_and_resumed(
    limited_worker, old_scenes, sent
):
    # The sender is this process, with the default settings.
    assert (settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT) == (3300, 3600)
    hard, soft = (3600, 3300) if sent == "sender" else sent
    mark = limited_worker.mark()
    run = create_run(
        TASK.removeprefix("maintenance."),
        {"batch_size": 100},
        trigger=MaintenanceRun.Trigger.CLI,
        celery_task_id=str(uuid.uuid4()),
    )
    interrupted = f"Soft time limit ({SOFT}s) exceeded for {TASK}[{run.celery_task_id}]"
    with every_scene_locked():
        sent_at = time.monotonic()
        send_with_limits(run, hard=hard, soft=soft)
        limited_worker.wait_for_log(interrupted, timeout=HARD, since=mark)
        noticed = time.monotonic() - sent_at
        # The first attempt ended (interrupted, back on the queue) and a second began.
        wait_until(started_twice(run), timeout=HARD)
    wait_until(finished(run), timeout=30)

    log = limited_worker.log()[mark:]
    assert SOFT <= noticed < HARD, noticed
    assert f"Soft time limit ({soft}s)" not in log  # the message's
    assert "Hard time limit" not in log
    assert run.status == Status.SUCCEEDED, run.error
    assert run.changed > 0 and run.attempts >= 2
