"""`make bench`: generate two scales, time each operation against its baselines on
identical copies of the data, measure a run's fixed cost, what the application's own
writes feel while each one runs, Celery's overhead, and write the report.

    python -m benchmarks.run [--scales small,large] [--output benchmarks/results]

Each operation and its single SQL statement run REPEATS times, alternately, each on a
fresh copy and beside the same stream of application writes (benchmarks/app_load.py),
which also runs alone before each operation for the idle baseline. The report takes the
median time and the most memory; batch times and the application's write latencies are
pooled over the repeats.

The PostgreSQL server comes from BENCH_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/postgres); it creates and drops databases named
tgbench_*. Redis for the Celery measurement: BENCH_BROKER_URL (default db 13).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import environ
import psycopg

from benchmarks import celery_overhead, report
from benchmarks.app_load import AppWrites, percentile

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ("archive_old_scenes", "recalculate_xp", "validate_data_integrity")
NAIVE_AT = {"small"}  # the per-row loop takes minutes already at the small scale
REPEATS = 3
# The application's writes with nothing else running, after a second to settle, before
# each operation's runs: the machine's other load changes over a run of the bench.
IDLE_SECONDS = 6
COPY = "tgbench_run"


class Server:
    """Databases on the benchmark's PostgreSQL server, copied from templates."""

    def __init__(self, url):
        self.config = environ.Env.db_url_config(url)

    def url(self, name):
        c = self.config
        credentials = c["USER"] + (f":{c['PASSWORD']}" if c["PASSWORD"] else "")
        return f"postgres://{credentials}@{c['HOST'] or '127.0.0.1'}:{c['PORT'] or 5432}/{name}"

    def execute(self, *statements):
        with psycopg.connect(self.url(self.config["NAME"] or "postgres"), autocommit=True) as db:
            for statement in statements:
                db.execute(statement)

    def fresh(self, name, template=None):
        # FILE_COPY (PostgreSQL 15) copies the files after a checkpoint: faster than
        # WAL_LOG, and it leaves no burst of WAL to slow down what is measured next.
        copy = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        self.execute(
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}{copy}"
        )

    def drop(self, name):
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def in_process(args, database_url, **env):
    """Run a Python module against one database and return the JSON it prints."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        # Production settings: with DEBUG on, Django keeps every query's SQL in memory.
        env={**os.environ, "DATABASE_URL": database_url, "DJANGO_DEBUG": "false", **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}


def say(text):
    print(text, flush=True)


def build_template(server, scale, name=None):
    template = name or f"tgbench_{scale}"
    server.fresh(template)
    url = server.url(template)
    in_process(["manage.py", "migrate", "--noinput", "-v0"], url)
    generated = in_process(["-m", "benchmarks.measure", "generate", scale], url)
    # Plans should see real statistics, as autovacuum would give them in production.
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("VACUUM ANALYZE")
    return template, generated


def measure(server, kind, operation=None):
    args = ["-m", "benchmarks.measure", kind] + ([operation] if operation else [])
    return in_process(args, server.url(COPY))


def beside_app_writes(server, template, kind, operation, then=None):
    """One measurement on a fresh copy while the application's writes go on; `then`
    measures something else on the same copy afterwards."""
    server.fresh(COPY, template)
    try:
        with AppWrites(server.url(COPY)) as writes:
            result = measure(server, kind, operation)
        result["app_ms"] = writes.latencies(result["started_at"], result["finished_at"])
        if then:
            result[then] = measure(server, then)
        return result
    finally:
        server.drop(COPY)


def idle_app_writes(server, template):
    """The application's write latencies with nothing else running (ms)."""
    server.fresh(COPY, template)
    try:
        with AppWrites(server.url(COPY)) as writes:
            started = time.time()
            time.sleep(1 + IDLE_SECONDS)
        # the first second warms up the connection and the server's caches
        return writes.latencies(started + 1, started + 1 + IDLE_SECONDS)
    finally:
        server.drop(COPY)


def _latency_summary(latencies):
    def ms(value):
        return None if value is None else round(value, 2)

    return {
        "writes": len(latencies),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(max(latencies, default=None)),
    }


POOLED = ("app_ms", "cycles_ms", "slowest_batches")


def combine(runs):
    """One figure from REPEATS runs: the median run's figures, with every run's time,
    the most memory, and the batches' and application writes' times pooled."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    combined = {k: v for k, v in ordered[len(ordered) // 2].items() if k not in POOLED}
    combined["seconds_all"] = [r["seconds"] for r in runs]
    combined["seconds"] = round(statistics.median(combined["seconds_all"]), 3)
    combined["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    combined["throttled_s"] = max((r.get("throttled_s") or 0) for r in runs)
    slowest = [batch for r in runs for batch in r.get("slowest_batches", [])]
    if slowest:
        combined["slowest_batches"] = sorted(slowest, key=lambda b: -b["cycle_ms"])[:3]
    cycles = [ms for r in runs for ms in r.get("cycles_ms", [])]
    if cycles:
        combined["p99_batch_ms"] = percentile(cycles, 0.99)
    combined["app_writes"] = _latency_summary([ms for r in runs for ms in r["app_ms"]])
    return combined


def bench_operation(server, template, scale, operation, then=None):
    """The operation and its single statement, REPEATS times each; `then` is measured
    once, on the copy the operation's first run left."""
    runs = {"ours": [], "sql": []}
    for repeat in range(REPEATS):
        for kind in runs:
            after = then if kind == "ours" and repeat == 0 else None
            runs[kind].append(beside_app_writes(server, template, kind, operation, after))
            say(f"   {operation:<24} {kind:<6} {runs[kind][-1]['seconds']:>9.2f}s")
    extra = runs["ours"][0].pop(then) if then else None
    measured = {kind: combine(results) for kind, results in runs.items()}
    if scale in NAIVE_AT and operation in report.NAIVE_OPS:
        measured["naive"] = combine([beside_app_writes(server, template, "naive", operation)])
        say(f"   {operation:<24} naive  {measured['naive']['seconds']:>9.2f}s")
    return measured, extra


def bench_scale(server, scale):
    started = time.perf_counter()
    say(f"== {scale}: generating ==")
    template, generated = build_template(server, scale)
    say(f"   {generated['rows']:,} rows in {generated['seconds']}s ({generated['rows_per_s']:,}/s)")
    result = {"generate": generated, "operations": {}}
    idle = []
    for operation in OPERATIONS:
        idle += idle_app_writes(server, template)
        # archiving leaves a copy with nothing left to archive: the fixed cost's place
        then = "fixed" if operation == "archive_old_scenes" else None
        measured, extra = bench_operation(server, template, scale, operation, then)
        result["operations"][operation] = measured
        if extra:
            result[then] = extra
    result["app_idle"] = _latency_summary(idle)
    say(f"   application writes, nothing running: p99 {result['app_idle']['p99_ms']} ms")
    say(f"   a run with nothing to do: {result['fixed']['empty_scope']['median_ms']} ms")
    server.fresh(COPY, template)
    try:
        result["export"] = measure(server, "export")
    finally:
        server.drop(COPY)
    say(f"   export_characters        {result['export']['seconds']:>9.2f}s")
    if scale == "small":
        say("== celery overhead (real Redis, real worker) ==")
        server.fresh(COPY, template)
        try:
            result["celery"] = celery_overhead.measure(server.url(COPY))
        finally:
            server.drop(COPY)
    server.drop(template)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def target_batch_ms():
    """MAINTENANCE_TARGET_BATCH_MS as the measured processes see it (default 250)."""
    return int(os.environ.get("MAINTENANCE_TARGET_BATCH_MS", "250"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="small,large")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    options = parser.parse_args()
    server = Server(
        os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    results = {"scales": {}, "machine": report.machine()}
    started = time.perf_counter()
    for scale in options.scales.split(","):
        results["scales"][scale] = bench_scale(server, scale)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["targets"] = report.targets(results, batch_ms=target_batch_ms())
    results["information"] = report.information(results)
    report.write(results, Path(options.output))
    for target in results["targets"]:
        mark = "met" if target["met"] else "NOT MET"
        say(f"[{mark:>7}] {target['name']}: {target['detail']}")
    for line in results["information"]:
        say(f"[   info] {line}")


if __name__ == "__main__":
    main()
