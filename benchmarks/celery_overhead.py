"""Celery's overhead through real Redis to a real worker: the latency from enqueue to
the run starting, and the whole cost of a run with nothing to do, against the same run
inline. Runs in a process of its own (python -m benchmarks.celery_overhead)."""

import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = 10
NOTHING_TO_DO = {"older_than_days": 36500}


def measure(database_url):
    from benchmarks.run import in_process

    broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
    return in_process(
        ["-m", "benchmarks.celery_overhead"],
        database_url,
        CELERY_BROKER_URL=broker,
        CELERY_RESULT_BACKEND=broker,
    )


def _ms(delta):
    return round(delta.total_seconds() * 1000, 1)


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker.settings")
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.utils import timezone

    from maintenance.engine.enqueue import start
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run
    from maintenance.models import MaintenanceRun

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "-Q",
            "maintenance",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        from celery import current_app

        deadline = time.monotonic() + 60
        while not current_app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
        latencies, totals, inline = [], [], []
        for _ in range(RUNS + 1):  # the first warms the worker up and is not counted
            enqueued = timezone.now()
            run = start("archive_old_scenes", NOTHING_TO_DO, trigger="cli")
            while not run.is_finished:
                time.sleep(0.002)
                run.refresh_from_db()
            latencies.append(_ms(run.started_at - enqueued))
            totals.append(_ms(run.finished_at - enqueued))
        for _ in range(RUNS):
            started = time.perf_counter()
            execute(create_run("archive_old_scenes", NOTHING_TO_DO, trigger="cli"))
            inline.append(round((time.perf_counter() - started) * 1000, 1))
        latencies, totals = latencies[1:], totals[1:]
        assert MaintenanceRun.objects.filter(status="succeeded").count() == 2 * RUNS + 1
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
    print(
        json.dumps(
            {
                "runs": RUNS,
                "enqueue_to_start_ms_median": round(statistics.median(latencies), 1),
                "enqueue_to_start_ms_max": max(latencies),
                "empty_run_via_worker_ms_median": round(statistics.median(totals), 1),
                "empty_run_inline_ms_median": round(statistics.median(inline), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
