"""Replication lag throttles a run, measured on a real streaming replica.

The test builds its own primary (pg_createcluster) and a standby of it (pg_basebackup),
so the shared server is never touched. Pausing the standby's replay while the primary
keeps writing makes `pg_stat_replication.replay_lag` grow for real; `run_maintenance
--inline` against the primary must wait, say why, and go on once replay resumes."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.services import ROOT

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CLUSTER = "tglagprimary"


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _can_build_clusters():
    return (
        shutil.which("pg_createcluster") is not None
        and (PG_BIN / "pg_basebackup").exists()
        and os.geteuid() == 0
    )


def _run(*args, user=None):
    command = ["runuser", "-u", user, "--", *args] if user else list(args)
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)


@pytest.fixture
def replica(real_services):
    """(primary URL, standby URL) of a fresh primary with one streaming standby."""
    if not _can_build_clusters():
        message = "building a replica needs root and PostgreSQL 15's pg_createcluster"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    primary_port, standby_port = _free_port(), _free_port()
    standby_dir = Path(tempfile.mkdtemp(prefix="tg-standby-"))
    subprocess.run(["pg_dropcluster", "--stop", "15", CLUSTER], capture_output=True)
    try:
        _run(
            "pg_createcluster",
            "15",
            CLUSTER,
            "--port",
            str(primary_port),
            "--start",
            "--",
            "--auth=trust",
        )
        shutil.chown(standby_dir, "postgres")
        standby_dir.chmod(0o700)
        _run(
            str(PG_BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary_port),
            "-U",
            "postgres",
            "-D",
            str(standby_dir),
            "-R",
            "-X",
            "stream",
            user="postgres",
        )
        (standby_dir / "postgresql.conf").touch()
        shutil.chown(standby_dir / "postgresql.conf", "postgres")
        options = (
            f"-p {standby_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp "
            f"-c hba_file=/etc/postgresql/15/{CLUSTER}/pg_hba.conf -c hot_standby=on"
        )
        _run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(standby_dir),
            "-o",
            options,
            "-l",
            str(standby_dir / "log"),
            "-w",
            "start",
            user="postgres",
        )
        primary = f"postgres://postgres@127.0.0.1:{primary_port}/postgres"
        with psycopg.connect(primary, autocommit=True) as db:
            deadline = time.monotonic() + 30
            while not db.execute("SELECT 1 FROM pg_stat_replication").fetchone():
                assert time.monotonic() < deadline, "the standby never connected"
                time.sleep(0.2)
            db.execute("CREATE DATABASE chronicle")
        yield (
            f"postgres://postgres@127.0.0.1:{primary_port}/chronicle",
            f"postgres://postgres@127.0.0.1:{standby_port}/postgres",
        )
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(standby_dir),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        subprocess.run(["pg_dropcluster", "--stop", "15", CLUSTER], capture_output=True)
        shutil.rmtree(standby_dir, ignore_errors=True)


def manage(database_url, *args, **env):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_replica_that_falls_behind_throttles_a_run_until_it_catches_up(replica):
    primary, standby = replica
    assert manage(primary, "migrate", "--noinput", "-v0").returncode == 0
    with psycopg.connect(primary, autocommit=True) as db:
        db.execute(
            "INSERT INTO chronicles_scene (name, finished, xp_given, created_at, last_activity_at) "
            "SELECT 'old ' || n, true, false, now() - interval '200 days', NULL "
            "FROM generate_series(1, 500) n"
        )
    with psycopg.connect(standby, autocommit=True) as replay:
        replay.execute("SELECT pg_wal_replay_pause()")
        # The primary keeps writing (the site), so the standby's replay lag grows.
        writing = threading.Event()
        writing.set()

        def site_writes():
            with psycopg.connect(primary, autocommit=True) as site:
                while writing.is_set():
                    site.execute("UPDATE chronicles_scene SET name = name WHERE id = 1")
                    time.sleep(0.05)

        writer = threading.Thread(target=site_writes, daemon=True)
        writer.start()
        try:
            with psycopg.connect(primary, autocommit=True) as db:
                deadline = time.monotonic() + 20
                while (
                    db.execute(
                        "SELECT COALESCE(EXTRACT(EPOCH FROM MAX(replay_lag)), 0) "
                        "FROM pg_stat_replication"
                    ).fetchone()[0]
                    or 0
                ) < 2:
                    assert time.monotonic() < deadline, "replay lag never grew"
                    time.sleep(0.2)

            def resume_replay_later():
                # Once the run has waited for replay for a while (a loaded machine may
                # take seconds to start the command), never before: then it must wait.
                deadline = time.monotonic() + 60
                with psycopg.connect(primary, autocommit=True) as watch:
                    while time.monotonic() < deadline:
                        waited = watch.execute(
                            "SELECT max(throttled_s) FROM maintenance_maintenancerun "
                            "WHERE throttle_reason LIKE 'replication lag %%'"
                        ).fetchone()[0]
                        if waited and waited >= 2:
                            break
                        time.sleep(0.1)
                with psycopg.connect(standby, autocommit=True) as later:
                    later.execute("SELECT pg_wal_replay_resume()")

            resumer = threading.Thread(target=resume_replay_later, daemon=True)
            resumer.start()
            started = time.monotonic()
            done = manage(
                primary,
                "run_maintenance",
                "archive_old_scenes",
                "--inline",
                "--json",
                MAINTENANCE_MAX_REPLICATION_LAG_S="1",
            )
            elapsed = time.monotonic() - started
            resumer.join(10)
        finally:
            writing.clear()
            writer.join(10)

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded"
    assert summary["changed"] == 500
    assert summary["throttle_reason"].startswith("replication lag ")
    assert summary["throttle_reason"].endswith(" > 1s")
    assert summary["throttled_s"] >= 2
    assert elapsed >= 2  # it waited for replay to resume
