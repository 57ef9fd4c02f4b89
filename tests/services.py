"""What the integration suite needs: real PostgreSQL and Redis, and a way to run the
celery processes of docker-compose.yml against the test database."""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import yaml
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _services_required():
    return os.environ.get("CI") == "true" or os.environ.get("REQUIRE_SERVICES") == "1"


def _missing():
    problems = []
    if connection.vendor != "postgresql":
        problems.append(f"the test database is {connection.vendor}, not PostgreSQL (DATABASE_URL)")
    try:
        redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        problems.append(f"Redis at {settings.CELERY_BROKER_URL} is unreachable ({error})")
    return problems


def require_services():
    problems = _missing()
    if not problems:
        return
    message = "integration suite needs real services: " + "; ".join(problems)
    if _services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def compose_command(service):
    """The command docker-compose.yml runs for `service`, as an argument list."""
    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    return shlex.split(spec["services"][service]["command"])


def database_url_for_subprocess():
    """A DATABASE_URL that points a child process at the test database."""
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    host = db["HOST"] or "127.0.0.1"
    port = db["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{db['NAME']}"


class CeleryProcess:
    """A real `celery` process started from the compose command, with its output in a file."""

    def __init__(self, service, log_dir, extra_env=None):
        argv = compose_command(service)
        assert argv[0] == "celery", argv
        # Same command, run with this virtual environment's celery.
        self.argv = [sys.executable, "-m", "celery", *argv[1:]]
        self.log_path = Path(log_dir) / f"{service}.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url_for_subprocess(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.process = None

    def start(self):
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self):
        return self.log_path.read_text(errors="replace")

    def mark(self):
        """A position in the log: wait_for_log(since=mark) ignores what came before."""
        return len(self.log())

    def wait_for_log(self, text, timeout=30, since=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[since:]:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not seen in {self.log_path.name}:\n{self.log()[-3000:]}")

    def pool_pids(self):
        """The worker's pool processes (its children), read from /proc."""
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The parent pid is the 2nd field after the parenthesised command name.
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid:
                children.append(int(entry.name))
        return children

    def kill_pool(self):
        """SIGKILL the pool processes: the task dies, the main worker lives on."""
        for pid in self.pool_pids():
            os.kill(pid, signal.SIGKILL)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self.process:
            self._log.close()
