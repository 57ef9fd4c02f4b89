from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from chronicles.testdata.generator import Options, generate
from tests.services import CeleryProcess

LEASE = 3  # seconds: short, so a dead run is noticed within a test
SCENES = 100_000


def empty_test_broker():
    """Drop queued and unacknowledged messages of earlier tests. TEST_BROKER_URL is a
    Redis database of its own (README), so emptying it touches nothing else."""
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def start_worker(log_dir, **env):
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    worker = CeleryProcess("worker", log_dir, extra_env=env).start()
    worker.wait_for_log("ready.", timeout=60)
    return worker


@pytest.fixture(scope="module")
def celery_worker_process(real_services, django_db_setup, tmp_path_factory):
    """A real `celery worker` (the compose command) consuming the maintenance queue of the
    test Redis and writing to the test PostgreSQL database; one per test module, so a
    module can run workers of its own."""
    empty_test_broker()
    worker = start_worker(tmp_path_factory.mktemp("celery"))
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_beat_process(real_services, tmp_path):
    beat = CeleryProcess("beat", tmp_path)
    yield beat
    beat.stop()


@pytest.fixture
def fresh(real_services, settings):
    """100,000 generated scenes, committed so the worker processes see them. Returns the
    moment before: anything archived since was archived by a run of the test."""
    settings.MAINTENANCE_LEASE_SECONDS = LEASE
    empty_test_broker()
    started = timezone.now()
    generate(
        Options(
            seed=99,
            chronicles=20,
            characters=2_000,
            scenes=SCENES,
            posts_per_scene=1,
            ledger_entries=1,
            defect_rate=0,
        )
    )
    return started
