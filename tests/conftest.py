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
