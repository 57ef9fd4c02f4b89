"""Settings come from the environment; production refuses unsafe ones."""

import json
import os
import subprocess
import sys

from django.conf import settings

from tests.services import ROOT

STRONG_KEY = "k3y-" + "0123456789abcdef" * 4
SHOW_SETTINGS = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'engine': s.DATABASES['default']['ENGINE'], "
    "'name': str(s.DATABASES['default']['NAME']), 'broker': s.CELERY_BROKER_URL, "
    "'tz': s.TIME_ZONE}))"
)


def load_settings(**env):
    """Import the settings in a fresh process with exactly these variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    clean.pop("DATABASE_URL", None)
    clean.pop("TIME_ZONE", None)
    clean["DJANGO_SETTINGS_MODULE"] = "worker.settings"
    return subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_defaults_are_an_sqlite_file_in_the_project_and_local_redis():
    shown = load_settings()
    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(ROOT / "db.sqlite3")
    assert values["broker"] == "redis://localhost:6379/0"
    assert values["tz"] == "UTC"


def test_database_url_and_time_zone_come_from_the_environment():
    shown = load_settings(
        DATABASE_URL="postgres://tg:secret@db.example:5433/chronicle", TIME_ZONE="Europe/Berlin"
    )
    values = json.loads(shown.stdout)
    assert values["engine"] == "django.db.backends.postgresql"
    assert values["name"] == "chronicle"
    assert values["tz"] == "Europe/Berlin"


def test_production_refuses_to_start_without_a_secret_key():
    shown = load_settings(DJANGO_PRODUCTION="true")
    assert shown.returncode != 0
    assert "DJANGO_SECRET_KEY: DJANGO_PRODUCTION is on but it is not set" in shown.stderr


def test_production_refuses_debug():
    shown = load_settings(DJANGO_PRODUCTION="true", DJANGO_SECRET_KEY=STRONG_KEY, DJANGO_DEBUG="1")
    assert shown.returncode != 0
    assert "DJANGO_DEBUG: must be off" in shown.stderr


def test_production_keeps_debug_off_by_default():
    shown = load_settings(DJANGO_PRODUCTION="true", DJANGO_SECRET_KEY=STRONG_KEY)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["debug"] is False


def test_celery_accepts_json_only():
    assert settings.CELERY_ACCEPT_CONTENT == ["json"]
    assert settings.CELERY_TASK_SERIALIZER == "json"
    assert settings.CELERY_RESULT_SERIALIZER == "json"


def test_maintenance_tasks_are_reliable_on_their_own_queue():
    from worker.celery import app

    conf = app.conf
    assert conf.task_routes["maintenance.*"] == {"queue": "maintenance"}
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
    # Redis would deliver a still-running task twice if this were shorter.
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.beat_scheduler == "maintenance.schedules:MaintenanceScheduler"
