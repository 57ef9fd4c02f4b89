"""docker-compose.yml is valid (Debian's docker-compose; no engine needed) and its
worker and beat commands are the ones the integration suite runs."""

import os
import shutil
import subprocess

import pytest
import yaml

from tests.services import COMPOSE_FILE, ROOT, compose_command

requires_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None and os.environ.get("CI") != "true",
    reason="docker-compose is not installed (apt-get install docker-compose)",
)


@requires_compose
def test_docker_compose_accepts_the_file():
    shown = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SECRET_KEY": "x" * 50},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    resolved = yaml.safe_load(shown.stdout)
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
