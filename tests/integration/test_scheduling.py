"""Scheduling you can trust, with real beat and worker processes:

- two beats (and a leader SIGKILLed and restarted on the way) for five minutes with an
  every-minute schedule make exactly one run per due minute;
- ten duplicate triggers with one worker process make one run and nine coalesced, and
  copies of one message make one run;
- a database stopped for 90 s while beat sends a job: the job waits on the queue and is
  a recorded run once the database answers (on a PostgreSQL cluster of the test's own).
"""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from celery import current_app
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from maintenance.engine.enqueue import start
from maintenance.models import MaintenanceRun, TaskMessage
from tests import factories
from tests.integration.clusters import own_cluster
from tests.integration.conftest import empty_test_broker, start_worker
from tests.services import ROOT, CeleryProcess

pytestmark = pytest.mark.django_db(transaction=True)
Status = MaintenanceRun.Status
BEAT_ENV = {"MAINTENANCE_BEAT_LEASE_SECONDS": "6", "LOG_LEVEL": "INFO"}


def _every_minute(name: str) -> PeriodicTask:
    cron = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    return PeriodicTask.objects.create(name=name, task="maintenance.recalculate_xp", crontab=cron)


def _beat(log_dir, **env) -> CeleryProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    return CeleryProcess("beat", log_dir, extra_env={**BEAT_ENV, **env}).start()


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _minute_boundaries(after: float, until: float) -> list[datetime]:
    first = int(after // 60 + 1) * 60
    return [datetime.fromtimestamp(t, UTC) for t in range(first, int(until) + 1, 60)]


def _stop(*processes: CeleryProcess) -> None:
    for process in processes:
        if process.process is not None and process.process.poll() is None:
            process.stop()


@pytest.mark.scenario
def test_two_beats_for_five_minutes_make_one_run_per_due_minute(tmp_path):
    empty_test_broker()
    factories.scene()
    _every_minute("xp every minute")
    worker = start_worker(tmp_path / "worker", CELERY_WORKER_CONCURRENCY="1")
    first = _beat(tmp_path / "beat1")
    second = _beat(tmp_path / "beat2")
    third = None
    try:
        first.wait_for_log("leads", timeout=60)
        second.wait_for_log("stands by", timeout=60)
        began = time.time()
        if 60 - began % 60 < 3:  # too close to a due minute to count it fairly
            _sleep_until((began // 60 + 1) * 60 + 1)
            began = time.time()
        # Half-way the leader is SIGKILLed and its supervisor starts it again at once:
        # the standby takes over and the restarted beat stands by; nobody sends twice.
        _sleep_until(began + 150)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        third = _beat(tmp_path / "beat3")
        # Whichever of the two asks first once the hold has run out takes over.
        deadline = time.monotonic() + 30
        while not any("takes over the lead from beat" in b.log() for b in (second, third)):
            assert time.monotonic() < deadline, second.log()[-2000:] + third.log()[-2000:]
            time.sleep(0.5)
        ended = began + 300
        _sleep_until(ended)
        _stop(second, third)
        due = _minute_boundaries(began, ended)
        assert len(due) == 5

        def counted():
            return list(
                MaintenanceRun.objects.filter(
                    periodic_task_name="xp every minute", triggered_at__gt=began_at
                ).order_by("triggered_at")
            )

        began_at = datetime.fromtimestamp(began, UTC)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(counted()) < 5:
            time.sleep(0.5)
        runs = counted()
        assert [run.triggered_at for run in runs] == due, worker.log()[-3000:]
        assert {run.status for run in runs} == {Status.SUCCEEDED}
        assert {run.trigger for run in runs} == {"beat"}
        # Every run names the beat that sent it: the first leader, then the standby.
        assert all(run.sent_by for run in runs)
        assert len({run.sent_by for run in runs}) in (1, 2)
        # No due minute was sent twice, in the window or before it.
        all_runs = MaintenanceRun.objects.filter(periodic_task_name="xp every minute")
        triggered = list(all_runs.values_list("triggered_at", flat=True))
        assert len(triggered) == len(set(triggered))
        assert TaskMessage.objects.filter(periodic_task_name="xp every minute").count() == len(
            triggered
        )
    finally:
        _stop(first, second, *(p for p in (third,) if p), worker)


def test_ten_duplicate_triggers_with_one_worker_process_make_one_run(tmp_path):
    empty_test_broker()
    for _ in range(3):
        factories.scene()
    # Queued before any worker runs: all ten wait behind the first on one process.
    triggered = [start("recalculate_xp", {}, trigger="cli") for _ in range(10)]
    # A message sent three times under one task id (as two beats would) is one run.
    copies = [
        current_app.send_task(
            "maintenance.validate_data_integrity",
            kwargs={},
            task_id="one-message-three-copies",
            headers={"periodic_task_name": "copies"},
        )
        for _ in range(3)
    ]
    assert len(copies) == 3
    worker = start_worker(tmp_path / "worker", CELERY_WORKER_CONCURRENCY="1")
    try:
        deadline = time.monotonic() + 90
        ids = [run.pk for run in triggered]
        while time.monotonic() < deadline:
            pending = MaintenanceRun.objects.filter(pk__in=ids).exclude(
                status__in=(Status.SUCCEEDED, Status.SKIPPED)
            )
            copied = MaintenanceRun.objects.filter(periodic_task_name="copies")
            if not pending.exists() and copied.filter(status=Status.SUCCEEDED).exists():
                break
            time.sleep(0.5)
        runs = list(MaintenanceRun.objects.filter(pk__in=ids).order_by("pk"))
        assert [run.status for run in runs] == [Status.SUCCEEDED] + [Status.SKIPPED] * 9
        for duplicate in runs[1:]:
            assert duplicate.skipped_because_of_id == runs[0].pk
            assert duplicate.error.startswith(f"coalesced: run #{runs[0].pk}")
        time.sleep(2)  # the last copies of the message are taken too
        assert MaintenanceRun.objects.filter(periodic_task_name="copies").count() == 1
        assert "coalesced: into run #" in worker.log()
    finally:
        worker.stop()


# --- the database stopped for 90 s ---


@pytest.fixture
def outage_cluster():
    """A PostgreSQL cluster of this test's own, migrated: stopping it disturbs nobody."""
    with own_cluster("tgoutage", "outage") as cluster:
        yield cluster


SCHEDULE = """
from django_celery_beat.models import CrontabSchedule, PeriodicTask
cron = CrontabSchedule.objects.create(minute="{minute}", hour="{hour}", timezone="UTC")
PeriodicTask.objects.create(
    name="xp during outage", task="maintenance.recalculate_xp", crontab=cron
)
"""


def _runs_of(url: str, since: datetime) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute(
            "SELECT status, trigger, sent_by, triggered_at FROM maintenance_maintenancerun"
            " WHERE periodic_task_name = 'xp during outage' AND triggered_at >= %s"
            " ORDER BY triggered_at",
            (since,),
        ).fetchall()


@pytest.mark.scenario
def test_a_job_sent_while_the_database_is_down_is_a_recorded_run_afterwards(
    outage_cluster, tmp_path, real_services
):
    database = outage_cluster.url
    empty_test_broker()
    # One due time, far enough ahead to start a worker and beat, in the middle of a 90 s
    # outage: the database stops 55 s before it and starts again 35 s after.
    due = datetime.fromtimestamp((time.time() // 60 + 2) * 60, UTC)
    if (due - datetime.now(UTC)).total_seconds() < 80:
        due += timedelta(minutes=1)
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            SCHEDULE.format(minute=due.minute, hour=due.hour),
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database},
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = {"DATABASE_URL": database, "LOG_LEVEL": "INFO"}
    worker = start_worker(tmp_path / "worker", CELERY_WORKER_CONCURRENCY="1", **env)
    # Its hold outlasts the outage, so it goes on sending while nobody can take over.
    beat = _beat(tmp_path / "beat", MAINTENANCE_BEAT_LEASE_SECONDS="300", **env)
    try:
        beat.wait_for_log("leads", timeout=60)
        _sleep_until(due.timestamp() - 55)
        worker_mark, beat_mark = worker.mark(), beat.mark()
        outage_cluster.ctl("stop", "-m", "fast")
        beat.wait_for_log("Sending due task xp during outage", timeout=70, since=beat_mark)
        _sleep_until(due.timestamp() + 35)
        outage_cluster.ctl("start")
        deadline = time.monotonic() + 120
        runs = []
        while time.monotonic() < deadline and not runs:
            runs = [run for run in _runs_of(database, due) if run[0] == Status.SUCCEEDED]
            time.sleep(1)
        assert runs, worker.log()[-4000:]
        [(status, trigger, sent_by, triggered_at)] = _runs_of(database, due)
        assert (status, trigger, triggered_at) == (Status.SUCCEEDED, "beat", due)
        assert sent_by and sent_by in beat.log() and beat.process.poll() is None
        # The outage in the logs: one line per retry, one traceback at the end.
        outage_log = worker.log()[worker_mark:]
        assert "retry: Retry in" in outage_log and "DatabaseUnavailable" in outage_log
        assert outage_log.count("Traceback") <= 1, outage_log[-4000:]
        assert beat.log()[beat_mark:].count("Traceback") <= 1, beat.log()[-4000:]
    finally:
        _stop(beat, worker)
