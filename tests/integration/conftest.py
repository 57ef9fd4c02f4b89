from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.services import CeleryProcess


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
