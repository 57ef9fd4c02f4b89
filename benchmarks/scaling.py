"""Partitioned runs through real Celery workers: archive_old_scenes and
validate_data_integrity with 1, 2 and 4 partitions on 1 and 2 worker processes, on
fresh copies of the same data. Each measurement runs in a process of its own:

    python -m benchmarks.scaling one OPERATION PARTITIONS PROCESSES

prints one JSON object (DATABASE_URL names the copy, CELERY_BROKER_URL the broker).
"""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATIONS = ("archive_old_scenes", "validate_data_integrity")
PARTITIONS = (1, 2, 4)
PROCESSES = (1, 2)
TIMEOUT_S = 900


def measure(server, template, say) -> dict:
    """Every combination on a fresh copy of `template`; {operation: [measurements]}."""
    from benchmarks.run import in_process

    broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
    results = {}
    for operation in OPERATIONS:
        results[operation] = []
        for processes in PROCESSES:
            for partitions in PARTITIONS:
                name = "tgbench_scaling"
                server.fresh(name, template)
                try:
                    measured = in_process(
                        [
                            "-m",
                            "benchmarks.scaling",
                            "one",
                            operation,
                            str(partitions),
                            str(processes),
                        ],
                        server.url(name),
                        CELERY_BROKER_URL=broker,
                        CELERY_RESULT_BACKEND=broker,
                    )
                finally:
                    server.drop(name)
                results[operation].append(measured)
                say(
                    f"   {operation:<24} {partitions} partition(s) on {processes} process(es) "
                    f"{measured['seconds']:>8.2f}s {measured['rows_per_s']:>10,} rows/s"
                )
    return results


def _worker(processes: int) -> subprocess.Popen:
    return subprocess.Popen(
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
            str(processes),
            "--prefetch-multiplier",
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


def one(operation: str, partitions: int, processes: int) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker.settings")
    import django

    django.setup()
    import redis
    from celery import current_app
    from django.conf import settings

    from maintenance.engine.enqueue import start
    from maintenance.models import MaintenanceRun

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    worker = _worker(processes)
    try:
        deadline = time.monotonic() + 60
        while not current_app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
        params = {"partitions": partitions}
        if operation == "validate_data_integrity":
            params["dry_run"] = True  # the same work every time: find, record, no fix
        started = time.perf_counter()
        run = start(operation, params, trigger="cli", requested_by="bench")
        deadline = time.monotonic() + TIMEOUT_S
        while not run.is_finished:
            if time.monotonic() > deadline:
                raise RuntimeError(f"run #{run.pk} did not finish in {TIMEOUT_S}s")
            time.sleep(0.05)
            run.refresh_from_db()
        seconds = time.perf_counter() - started
        assert run.status == MaintenanceRun.Status.SUCCEEDED, run.error
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(60)
    return {
        "operation": operation,
        "partitions": partitions,
        "processes": processes,
        "seconds": round(seconds, 2),
        "processed": run.processed,
        "changed": run.changed,
        "findings": run.findings,
        "batches": run.batches,
        "rows_per_s": round(run.processed / seconds) if seconds else None,
    }


def speedups(measured: list[dict]) -> list[dict]:
    """Each measurement with its speed-up over one partition on one process."""
    base = next(m for m in measured if m["partitions"] == 1 and m["processes"] == 1)
    return [{**m, "speedup": round(base["seconds"] / m["seconds"], 2)} for m in measured]


def overhead(measured: list[dict]) -> float:
    """Extra time of 4 partitions over 1, both on one process, as a fraction."""
    alone = next(m for m in measured if m["partitions"] == 1 and m["processes"] == 1)
    split = next(m for m in measured if m["partitions"] == 4 and m["processes"] == 1)
    return round(split["seconds"] / alone["seconds"] - 1, 3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["one"]:
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        sys.exit(__doc__)
