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
