"""One measurement in a process of its own, so peak memory is its own: prints JSON.

    python -m benchmarks.measure generate SCALE
    python -m benchmarks.measure ours|sql|naive OPERATION
    python -m benchmarks.measure export
    python -m benchmarks.measure fixed

DATABASE_URL names the database copy to work on. Timed work also reports when it
started and finished (epoch seconds), so that run.py can pick the application writes
that ran beside it.
"""

import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from benchmarks import baselines  # noqa: E402
from benchmarks.app_load import percentile  # noqa: E402
from benchmarks.scales import SCALES  # noqa: E402


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def generate(scale):
    from chronicles.testdata.generator import generate as make

    result = make(SCALES[scale])
    return {
        "rows": result.total_rows,
        "seconds": round(result.seconds, 2),
        "rows_per_s": round(result.total_rows / result.seconds),
        "table_rows": result.rows,
    }


class SqlTimer:
    """Counts queries and their time, split into the operation's (the game's tables)
    and the engine's (its own tables, timeouts, health checks)."""

    def __init__(self):
        self.queries = 0
        self.engine_ms = 0.0
        self.data_ms = 0.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            ms = (time.perf_counter() - started) * 1000
            self.queries += 1
            if "chronicles_" in sql:
                self.data_ms += ms
            else:
                self.engine_ms += ms


def ours(operation):
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run

    run = create_run(operation, {}, trigger="cli", requested_by="bench")
    ticks, sizes, reports = [], [], []

    def on_batch(report):
        ticks.append(time.perf_counter())
        sizes.append(getattr(report, "size", None) or report.processed)
        reports.append(report)

    timer = SqlTimer()
    started_at = time.time()
    started = time.perf_counter()
    ticks.append(started)
    with connection.execute_wrapper(timer):
        run = execute(run, on_batch=on_batch)
    seconds = time.perf_counter() - started
    # A batch's whole cycle: select, change, findings, bookkeeping and the commit. The
    # first also holds the run's start (the claim, and counting the rows for progress,
    # 0.3 s over a million scenes), which is no batch transaction: it is reported apart.
    cycles = [(b - a) * 1000 for a, b in zip(ticks, ticks[1:], strict=False)]
    start_and_first = cycles[0] if cycles else None
    slowest = _slowest(cycles[1:], reports[1:])
    cycles = cycles[1:] or cycles
    assert run.status == "succeeded", run.error
    return {
        "seconds": round(seconds, 3),
        "started_at": started_at,
        "finished_at": started_at + seconds,
        "batch_sizes": _spread(sizes),
        "processed": run.processed,
        "changed": run.changed,
        "findings": run.findings,
        "batches": run.batches,
        # time the run waited for the database's sake (health checks, timeouts)
        "throttled_s": getattr(run, "throttled_s", None),
        "rows_per_s": round(run.processed / seconds) if seconds else None,
        "p99_batch_ms": round(percentile(cycles, 0.99), 1) if cycles else None,
        "cycles_ms": [round(cycle, 1) for cycle in cycles],
        "start_and_first_batch_ms": round(start_and_first, 1) if cycles else None,
        "slowest_batches": slowest,
        "queries_per_batch": round(timer.queries / run.batches, 2) if run.batches else None,
        # where the time went: the engine's own tables, the game's, and Python
        "engine_sql_s": round(timer.engine_ms / 1000, 3),
        "data_sql_s": round(timer.data_ms / 1000, 3),
    }


def _slowest(cycles, reports, count=3):
    """The slowest batch cycles with what their batches did, to tell why."""
    ranked = sorted(zip(cycles, reports, strict=True), key=lambda pair: -pair[0])[:count]
    return [
        {
            "cycle_ms": round(cycle, 1),
            "number": report.number,
            "size": getattr(report, "size", None),
            "processed": report.processed,
            "findings": report.findings,
            "batch_s": round(report.seconds, 3),  # the engine's own timing, before the commit
        }
        for cycle, report in ranked
    ]


def _spread(values):
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def baseline(kind, operation):
    action = (baselines.SQL if kind == "sql" else baselines.NAIVE)[operation]
    started_at = time.time()
    changed, seconds = baselines.timed(action)
    return {
        "seconds": round(seconds, 3),
        "changed": changed,
        "started_at": started_at,
        "finished_at": started_at + seconds,
    }


FIXED_RUNS = 21  # the first warms up (imports, the connection) and is not counted


def _time_runs(operation, params):
    """create_run + execute of a run with nothing to do, FIXED_RUNS times: the median,
    and the median run's split (engine tables, game tables, Python)."""
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run

    runs = []
    for _ in range(FIXED_RUNS):
        timer = SqlTimer()
        started = time.perf_counter()
        with connection.execute_wrapper(timer):
            run = execute(create_run(operation, params, trigger="cli", requested_by="bench"))
        timer.total_ms = (time.perf_counter() - started) * 1000
        assert run.status == "succeeded" and run.changed == 0, (run.status, run.error)
        runs.append(timer)
    counted = sorted(runs[1:], key=lambda timer: timer.total_ms)
    median = counted[len(counted) // 2]
    return {
        "runs": len(counted),
        "median_ms": round(statistics.median(t.total_ms for t in counted), 2),
        "min_ms": round(counted[0].total_ms, 2),
        "max_ms": round(counted[-1].total_ms, 2),
        "queries": median.queries,
        "engine_sql_ms": round(median.engine_ms, 2),
        "data_sql_ms": round(median.data_ms, 2),
        "python_ms": round(median.total_ms - median.engine_ms - median.data_ms, 2),
    }


def fixed():
    """A run's fixed cost, in this process: archive_old_scenes in a chronicle with no
    scenes (the engine's cost: record, claim, count, one empty batch, finish), and, as
    information, over the whole table right after everything old was archived (what a
    nightly run that finds nothing new costs at this scale)."""
    from chronicles.models import Chronicle
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run

    empty = Chronicle.objects.create(name="bench: nothing to do")
    # On a copy that was not archived yet, this archives it (run.py runs this after ours).
    execute(create_run("archive_old_scenes", {}, trigger="cli", requested_by="bench"))
    return {
        "empty_scope": _time_runs("archive_old_scenes", {"chronicle_id": empty.pk}),
        "nothing_left": _time_runs("archive_old_scenes", {}),
    }


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
    elif kind == "fixed":
        result = fixed()
    else:
        result = baseline(kind, argv[1])
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
