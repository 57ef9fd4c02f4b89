import pytest

from tests.services import CeleryProcess
from worker.celery import app as celery_app


@pytest.fixture(scope="session")
def celery_worker_process(real_services, django_db_setup, django_db_blocker, tmp_path_factory):
    """A real `celery worker` (the compose command) consuming the maintenance queue of the
    test Redis and writing to the test PostgreSQL database."""
    with django_db_blocker.unblock():
        celery_app.control.purge()  # leftovers of an earlier, interrupted run
    worker = CeleryProcess("worker", tmp_path_factory.mktemp("celery")).start()
    try:
        worker.wait_for_log("ready.", timeout=60)
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_beat_process(real_services, tmp_path):
    beat = CeleryProcess("beat", tmp_path)
    yield beat
    beat.stop()
