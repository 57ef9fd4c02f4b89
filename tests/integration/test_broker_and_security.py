"""A Redis outage, and what the worker refuses: pickled messages, unregistered tasks."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from celery import current_app

from chronicles.models import Scene
from maintenance.models import MaintenanceRun
from tests import factories
from tests.services import ROOT, CeleryProcess, database_url_for_subprocess

pytestmark = pytest.mark.django_db(transaction=True)
OUTAGE_PORT = 6391


def wait_for(probe, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


class RedisServer:
    """A Redis of this test's own, with an append-only file, so it can be stopped and
    started again without touching the suite's Redis."""

    def __init__(self, directory):
        self.directory = directory
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(OUTAGE_PORT),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self._answers())
        return self

    def _answers(self):
        import redis

        try:
            return redis.Redis(port=OUTAGE_PORT, socket_connect_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # writes the append-only file out
            self.process.wait(20)


def manage(*args, broker):
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": broker,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.monotonic() - started


def test_a_redis_outage_fails_fast_and_loses_no_run(real_services, tmp_path):
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    broker = f"redis://127.0.0.1:{OUTAGE_PORT}/0"
    factories.scene(name="old")
    redis_server = RedisServer(tmp_path).start()
    worker = None
    try:
        queued, _ = manage("run_maintenance", "archive_old_scenes", "--json", broker=broker)
        assert queued.returncode == 0, queued.stderr
        run_a = json.loads(queued.stdout)["run_id"]

        redis_server.stop()
        refused, seconds = manage("run_maintenance", "archive_old_scenes", broker=broker)
        assert refused.returncode == 1
        assert seconds < 10
        assert "unreachable" in refused.stderr and refused.stderr.count("\n") == 1
        assert "Traceback" not in refused.stderr
        assert MaintenanceRun.objects.count() == 1

        inline, _ = manage("run_maintenance", "recalculate_xp", "--inline", "--json", broker=broker)
        assert inline.returncode == 0 and json.loads(inline.stdout)["status"] == "succeeded"

        worker = CeleryProcess(
            "worker",
            tmp_path,
            extra_env={"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker},
        ).start()
        time.sleep(2)  # the worker is trying to connect to the stopped Redis
        redis_server.start()
        worker.wait_for_log("ready.", timeout=60)
        first = MaintenanceRun.objects.get(pk=run_a)
        wait_for(lambda: first.refresh_from_db() or first.status == "succeeded")
        assert Scene.objects.get().archived_at is not None

        mark = worker.mark()
        redis_server.stop()
        time.sleep(2)
        redis_server.start()
        worker.wait_for_log("Connected to redis", timeout=60, since=mark)
        after, _ = manage(
            "run_maintenance",
            "archive_old_scenes",
            "--dry-run",
            "--wait",
            "--json",
            broker=broker,
        )
        assert after.returncode == 0, after.stderr
        assert json.loads(after.stdout)["status"] == "succeeded"
    finally:
        if worker:
            worker.stop()
        redis_server.stop()


def test_a_pickled_message_is_refused(celery_worker_process):
    factories.scene(name="old")
    mark = celery_worker_process.mark()

    current_app.send_task(
        "maintenance.archive_old_scenes", kwargs={"older_than_days": 1}, serializer="pickle"
    )

    celery_worker_process.wait_for_log("untrusted content of type pickle", since=mark)
    assert not MaintenanceRun.objects.exists()
    assert Scene.objects.get().archived_at is None


def test_an_unregistered_task_is_not_run(celery_worker_process):
    mark = celery_worker_process.mark()

    current_app.send_task("maintenance.drop_all_tables", queue="maintenance")

    celery_worker_process.wait_for_log(
        "Received unregistered task of type 'maintenance.drop_all_tables'", since=mark
    )
    assert not MaintenanceRun.objects.exists()


def test_the_admin_refuses_a_schedule_for_an_unregistered_task(admin_client):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    unknown = PeriodicTask.objects.create(
        name="rogue", task="maintenance.drop_all_tables", interval=every_day
    )

    page = admin_client.post(
        "/admin/django_celery_beat/periodictask/",
        {"action": "run_tasks", "_selected_action": [unknown.pk]},
        follow=True,
    )

    shown = [str(message) for message in page.context["messages"]]
    assert len(shown) == 1 and "no maintenance operation is called" in shown[0]
    # Recorded as a failed run that says why; nothing ran.
    assert [run.status for run in MaintenanceRun.objects.all()] == ["failed"]
