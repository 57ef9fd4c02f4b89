"""PostgreSQL clusters of a test's own (Debian's pg_createcluster), for tests that stop
or restart the database: the shared cluster, and every other test using it, is never
disturbed, so the long scenarios can run beside the rest of the suite (scripts/test.sh)."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from django.db import connection

from tests.services import ROOT

VERSION = "15"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_cluster_tools() -> None:
    """Skip without root and pg_createcluster; under CI that is a failure."""
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        message = "a PostgreSQL cluster of the test's own needs root and pg_createcluster"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class Cluster:
    name: str
    port: int
    database: str

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def ctl(self, *args: str) -> None:
        """pg_ctlcluster ACTION for this cluster: stop, start, restart."""
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", VERSION, self.name, *args],
            check=True,
            capture_output=True,
            timeout=120,
        )


def _drop(name: str) -> None:
    subprocess.run(["pg_dropcluster", "--stop", VERSION, name], capture_output=True)


@contextlib.contextmanager
def own_cluster(name: str, database: str) -> Iterator[Cluster]:
    """A new cluster `name` on a free port with `database` created and migrated; dropped
    afterwards (and first, if an earlier run was killed before it could)."""
    require_cluster_tools()
    _drop(name)
    cluster = Cluster(name, free_port(), database)
    subprocess.run(
        ["pg_createcluster", VERSION, name, "--port", str(cluster.port), "--start"]
        + ["--", "--auth=trust"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        server = f"postgres://postgres@127.0.0.1:{cluster.port}/postgres"
        with psycopg.connect(server, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{database}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": cluster.url},
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield cluster
    finally:
        _drop(name)


@contextlib.contextmanager
def as_the_test_database(cluster: Cluster) -> Iterator[Cluster]:
    """Point this process's default connection (and so the celery processes the test
    starts, tests.services.database_url_for_subprocess) at `cluster` while the block
    runs; the test database of pytest-django is back afterwards."""
    connection.close()
    saved = dict(connection.settings_dict)
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(cluster.port))
    connection.settings_dict.update(NAME=cluster.database, USER="postgres", PASSWORD="")
    try:
        yield cluster
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
