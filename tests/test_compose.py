"""docker-compose.yml is valid (Debian's docker-compose; no engine needed) and its
worker and beat commands are the ones the integration suite runs."""

import os
import re
import shutil
import subprocess

import pytest
import yaml
from django.conf import settings

from tests.services import COMPOSE_FILE, ROOT, compose_command

requires_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None and os.environ.get("CI") != "true",
    reason="docker-compose is not installed (apt-get install docker-compose)",
)


# Seconds, beyond the slice, that a worker may need after SIGTERM: the slice can end
# just as a statement starts (MAINTENANCE_STATEMENT_TIMEOUT_MS at most), then the run is
# re-queued, its message acknowledged and Celery's own shutdown steps run.
SHUTDOWN_STEPS_SECONDS = 10
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def resolved_compose(**env: str) -> dict:
    """The file as `docker-compose config` resolves it (variables substituted)."""
    shown = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SECRET_KEY": "x" * 50, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return yaml.safe_load(shown.stdout)


def duration_seconds(text: str) -> int:
    """A compose duration such as 1m300s or 6m, in seconds (the parts add up)."""
    match = _DURATION.fullmatch(text)
    assert match and text, f"not a duration compose and Docker read alike: {text!r}"
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@requires_compose
def test_docker_compose_accepts_the_file():
    resolved = resolved_compose()
    assert set(resolved["services"]) == {"postgres", "redis", "web", "worker", "beat"}
    for service in ("web", "worker", "beat"):
        assert resolved["services"][service]["environment"]["DJANGO_PRODUCTION"] == "true"


@requires_compose
def test_docker_compose_requires_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    shown = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode != 0
    assert "DJANGO_SECRET_KEY" in shown.stderr


def test_services_wait_for_healthy_dependencies():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name
    for name in ("worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["web"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"


def test_worker_and_beat_commands():
    assert compose_command("worker")[:5] == ["celery", "-A", "worker", "worker", "-Q"]
    assert compose_command("worker")[5] == "maintenance"
    beat = compose_command("beat")
    assert beat[:4] == ["celery", "-A", "worker", "beat"]
    assert "maintenance.schedules:MaintenanceScheduler" in beat


def shutdown_needs(slice_seconds: int) -> float:
    """The longest a warm shutdown of the worker may take: a run stops at its next batch
    boundary, at the latest when its slice ends and the statement under way finishes,
    and then Celery's own soft shutdown (worker_soft_shutdown_timeout) and steps."""
    from worker.celery import app

    statement = settings.MAINTENANCE_STATEMENT_TIMEOUT_MS / 1000
    own = app.conf.worker_soft_shutdown_timeout or 0
    return slice_seconds + statement + own + SHUTDOWN_STEPS_SECONDS


@requires_compose
@pytest.mark.parametrize("slice_seconds", [None, "30", "900"])
def test_the_worker_stop_grace_period_fits_its_slice(slice_seconds):
    env = {} if slice_seconds is None else {"MAINTENANCE_SLICE_SECONDS": slice_seconds}
    worker = resolved_compose(**env)["services"]["worker"]
    grace = duration_seconds(worker["stop_grace_period"])
    slice_in_worker = int(worker["environment"]["MAINTENANCE_SLICE_SECONDS"])
    assert slice_in_worker == int(slice_seconds or 300)  # the default of worker/settings.py
    assert grace >= slice_in_worker + 60, worker["stop_grace_period"]
    assert grace >= shutdown_needs(slice_in_worker), worker["stop_grace_period"]


@requires_compose
def test_the_worker_keeps_the_environment_of_the_others():
    services = resolved_compose()["services"]
    shared = services["web"]["environment"]
    worker = services["worker"]["environment"]
    assert {name: worker[name] for name in shared} == shared


def test_the_worker_stop_grace_period_follows_its_slice():
    worker = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["worker"]
    assert "${MAINTENANCE_SLICE_SECONDS:-300}" in worker["stop_grace_period"]
    assert worker["environment"]["MAINTENANCE_SLICE_SECONDS"] == "${MAINTENANCE_SLICE_SECONDS:-300}"
