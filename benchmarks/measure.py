"""One measurement in a process of its own, so peak memory is its own: prints JSON.

    python -m benchmarks.measure generate SCALE
    python -m benchmarks.measure ours|sql|naive OPERATION
    python -m benchmarks.measure export

DATABASE_URL names the database copy to work on.
"""

import json
import os
import resource
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from benchmarks import baselines  # noqa: E402
from benchmarks.scales import SCALES  # noqa: E402


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentile(values, share):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def generate(scale):
    from chronicles.testdata.generator import generate as make

    result = make(SCALES[scale])
    return {
        "rows": result.total_rows,
        "seconds": round(result.seconds, 2),
        "rows_per_s": round(result.total_rows / result.seconds),
        "table_rows": result.rows,
    }


class QueryCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def ours(operation):
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run

    run = create_run(operation, {}, trigger="cli", requested_by="bench")
    ticks = []
    counter = QueryCounter()
    started = time.perf_counter()
    ticks.append(started)
    with connection.execute_wrapper(counter):
        run = execute(run, on_batch=lambda report: ticks.append(time.perf_counter()))
    seconds = time.perf_counter() - started
    # A batch's whole cycle: select, change, findings, bookkeeping and the commit.
    cycles = [(b - a) * 1000 for a, b in zip(ticks, ticks[1:], strict=False)]
    assert run.status == "succeeded", run.error
    return {
        "seconds": round(seconds, 3),
        "processed": run.processed,
        "changed": run.changed,
        "findings": run.findings,
        "batches": run.batches,
        "rows_per_s": round(run.processed / seconds) if seconds else None,
        "p99_batch_ms": round(percentile(cycles, 0.99), 1) if cycles else None,
        "queries_per_batch": round(counter.count / run.batches, 2) if run.batches else None,
    }


def baseline(kind, operation):
    action = (baselines.SQL if kind == "sql" else baselines.NAIVE)[operation]
    changed, seconds = baselines.timed(action)
    return {"seconds": round(seconds, 3), "changed": changed}


def export():
    from maintenance.transfer.export import export_lines

    started = time.perf_counter()
    count = -1
    with open(os.devnull, "w") as sink:
        for line in export_lines():
            sink.write(line + "\n")
            count += 1
    return {"seconds": round(time.perf_counter() - started, 3), "characters": count}


def main(argv):
    kind = argv[0]
    if kind == "generate":
        result = generate(argv[1])
    elif kind == "ours":
        result = ours(argv[1])
    elif kind == "export":
        result = export()
    else:
        result = baseline(kind, argv[1])
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
