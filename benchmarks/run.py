"""`make bench`: generate two scales, time each operation against its baselines on
identical copies of the data, measure Celery's overhead, and write the report.

    python -m benchmarks.run [--scales small,large] [--output benchmarks/results]

The PostgreSQL server comes from BENCH_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/postgres); it creates and drops databases named
tgbench_*. Redis for the Celery measurement: BENCH_BROKER_URL (default db 13).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import environ
import psycopg

from benchmarks import celery_overhead, report

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ("archive_old_scenes", "recalculate_xp", "validate_data_integrity")
NAIVE_AT = {"small"}  # the per-row loop takes minutes already at the small scale


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
        copy = f" TEMPLATE {template}" if template else ""
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


def build_template(server, scale):
    template = f"tgbench_{scale}"
    server.fresh(template)
    url = server.url(template)
    in_process(["manage.py", "migrate", "--noinput", "-v0"], url)
    generated = in_process(["-m", "benchmarks.measure", "generate", scale], url)
    # Plans should see real statistics, as autovacuum would give them in production.
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("VACUUM ANALYZE")
    return template, generated


def measure_on_copy(server, template, kind, operation):
    name = "tgbench_run"
    server.fresh(name, template)
    try:
        args = ["-m", "benchmarks.measure", kind] + ([operation] if operation else [])
        return in_process(args, server.url(name))
    finally:
        server.drop(name)


def bench_scale(server, scale):
    started = time.perf_counter()
    say(f"== {scale}: generating ==")
    template, generated = build_template(server, scale)
    say(f"   {generated['rows']:,} rows in {generated['seconds']}s ({generated['rows_per_s']:,}/s)")
    result = {"generate": generated, "operations": {}}
    for operation in OPERATIONS:
        measured = {}
        kinds = ["ours", "sql"] + (
            ["naive"] if scale in NAIVE_AT and operation in report.NAIVE_OPS else []
        )
        for kind in kinds:
            measured[kind] = measure_on_copy(server, template, kind, operation)
            say(f"   {operation:<24} {kind:<6} {measured[kind]['seconds']:>9.2f}s")
        result["operations"][operation] = measured
    result["export"] = measure_on_copy(server, template, "export", None)
    say(f"   export_characters        {result['export']['seconds']:>9.2f}s")
    if scale == "small":
        say("== celery overhead (real Redis, real worker) ==")
        server.fresh("tgbench_run", template)
        try:
            result["celery"] = celery_overhead.measure(server.url("tgbench_run"))
        finally:
            server.drop("tgbench_run")
    server.drop(template)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


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
    results["targets"] = report.targets(results)
    report.write(results, Path(options.output))
    for target in results["targets"]:
        mark = "met" if target["met"] else "NOT MET"
        say(f"[{mark:>7}] {target['name']}: {target['detail']}")


if __name__ == "__main__":
    main()
