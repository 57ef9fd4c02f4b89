"""Partitioned runs through real Celery workers: archive_old_scenes and
validate_data_integrity at 1M scenes with 1, 2 and 4 partitions on 1 and 2 worker
processes, each on a fresh copy of the same data, and the database's own write rate
(the single UPDATE of the archive rule) as the ceiling. `make bench` runs it after
benchmarks.run:

    python -m benchmarks.scaling [--scale large] [--output benchmarks/results]

writes scaling.json and scaling.md and prints each target met or not met. Each
measurement runs in a process of its own (`python -m benchmarks.scaling one OPERATION
PARTITIONS PROCESSES`, DATABASE_URL naming the copy).
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


OVERHEAD_TARGET = 0.10  # 4 partitions on one process: at most 10% slower than 1


def targets(results: dict) -> list[dict]:
    found = []
    for operation, measured in results["operations"].items():
        extra = overhead(measured)
        found.append(
            {
                "name": f"{operation}: overhead of 4 partitions on one process at most 10%",
                "met": extra <= OVERHEAD_TARGET,
                "detail": f"{extra:+.1%} against one partition on one process",
            }
        )
    return found


def markdown(results: dict) -> str:
    write = results["write_rate"]
    lines = [
        "# make bench: partitions",
        "",
        f"{results['date']}, {results['cpus']} CPUs (PostgreSQL on the same machine), "
        f"{results['scenes']:,} scenes; the whole run took {results['wall_seconds']}s.",
        "",
        "| operation | partitions | worker processes | seconds | rows/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for operation, measured in results["operations"].items():
        for m in speedups(measured):
            lines.append(
                f"| {operation} | {m['partitions']} | {m['processes']} | {m['seconds']} | "
                f"{m['rows_per_s']:,} | {m['speedup']}x |"
            )
    lines += [
        "",
        f"The database's write rate, measured with the archive rule as one UPDATE: "
        f"{write['rows_per_s']:,} rows/s ({write['changed']:,} rows in {write['seconds']}s).",
        "",
        "## Targets",
        "",
    ]
    for target in results["targets"]:
        lines.append(
            f"- {'met' if target['met'] else '**not met**'}: {target['name']}: {target['detail']}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    import argparse
    from datetime import UTC, datetime
    from pathlib import Path

    from benchmarks.run import ROOT as ROOT_PATH
    from benchmarks.run import Server, build_template, in_process, say

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="large")
    parser.add_argument("--output", default=str(ROOT_PATH / "benchmarks" / "results"))
    options = parser.parse_args()
    server = Server(
        os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    started = time.perf_counter()
    say(f"== partitions at the {options.scale} scale: generating ==")
    # A template of its own: benchmarks.run keeps its own under the plain name.
    template, generated = build_template(server, options.scale, f"tgbench_scaling_{options.scale}")
    try:
        server.fresh("tgbench_scaling", template)
        try:
            write = in_process(
                ["-m", "benchmarks.measure", "sql", "archive_old_scenes"],
                server.url("tgbench_scaling"),
            )
        finally:
            server.drop("tgbench_scaling")
        write["rows_per_s"] = round(write["changed"] / write["seconds"])
        say(f"   the single UPDATE: {write['changed']:,} rows in {write['seconds']}s")
        operations = measure(server, template, say)
    finally:
        server.drop(template)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "scenes": generated["table_rows"]["scenes"],
        "write_rate": write,
        "operations": {op: speedups(measured) for op, measured in operations.items()},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    results["targets"] = targets(results)
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "scaling.md").write_text(markdown(results))
    for target in results["targets"]:
        mark = "met" if target["met"] else "NOT MET"
        say(f"[{mark:>7}] {target['name']}: {target['detail']}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["one"]:
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
