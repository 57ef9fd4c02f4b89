import os

import pytest

from tests.services import require_services


def pytest_collection_modifyitems(config, items):
    # Everything under tests/integration needs the real servers.
    for item in items:
        if "/integration/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def real_services():
    """PostgreSQL as the test database and Redis as the broker, or skip (fail in CI)."""
    require_services()


@pytest.fixture
def fast_backoff(settings):
    """Throttling tests: short backoffs, and no health reading cached from another test."""
    from maintenance.engine import health

    settings.MAINTENANCE_RETRY_BACKOFF = 0.05
    health.forget()
    yield settings
    health.forget()


@pytest.fixture
def postgresql():
    """Skip where the database is not PostgreSQL (timeouts, health signals, real locks)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("lock and statement timeouts and health signals are PostgreSQL's")


@pytest.fixture
def broker_queue():
    """The real broker (CELERY_BROKER_URL) for tests that enqueue, with the maintenance
    queue emptied before and after; the Redis client, to look at what was sent. Skips
    when the broker is unreachable (fails under CI)."""
    from celery import current_app

    from maintenance.engine.enqueue import BrokerUnavailable, check_broker

    try:
        check_broker()
    except BrokerUnavailable as error:
        if os.environ.get("CI") == "true" or os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(str(error), pytrace=False)
        pytest.skip(str(error))
    queue = current_app.conf.task_default_queue
    with current_app.connection_for_write() as connection:
        redis = connection.default_channel.client
        redis.delete(queue)
        yield redis
        redis.delete(queue)


@pytest.fixture
def broker_answers(monkeypatch):
    """For monitoring tests about other checks: the broker (a check of its own, tested
    in tests/test_monitor_stuck.py) answers, even in the default suite with no server."""
    from maintenance.observability import queue

    answer = queue.BrokerState("redis://broker.test:6379/0", depth=0)
    monkeypatch.setattr(queue, "probe", lambda: answer)


@pytest.fixture
def beat_scheduler():
    """Makes MaintenanceSchedulers as `celery beat` does, and retires them after the
    test: their lead is handed back, and the sync django-celery-beat registers for the
    process's exit (when the test database is long gone) is cancelled."""
    from maintenance.schedules import MaintenanceScheduler
    from worker.celery import app

    made = []

    def make(**options):
        scheduler = MaintenanceScheduler(app=app, **options)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler._finalize.cancel()
        scheduler.leadership.release()
