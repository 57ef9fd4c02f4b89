"""Targets, and the results as JSON, a Markdown table and a PNG chart."""

import json
import os
import platform
from datetime import UTC, datetime

NAIVE_OPS = ("archive_old_scenes", "recalculate_xp")
LABELS = {
    "archive_old_scenes": "archive_old_scenes",
    "recalculate_xp": "recalculate_xp",
    "validate_data_integrity": "validate_data_integrity",
}


def machine():
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def _ratio(ours, other):
    return round(ours / other, 2) if other else None


def _per_row(result):
    rows = result.get("changed") or result.get("processed") or 0
    return result["seconds"] / rows if rows else None


def targets(results):
    scales = results["scales"]
    found = []

    def add(name, met, detail):
        found.append({"name": name, "met": bool(met), "detail": detail})

    for scale, data in scales.items():
        ops = data["operations"]
        archive = ops["archive_old_scenes"]
        ratio = _ratio(archive["ours"]["seconds"], archive["sql"]["seconds"])
        add(
            f"archive_old_scenes within 1.5x of the single UPDATE ({scale})",
            ratio <= 1.5,
            f"{ratio}x ({archive['ours']['seconds']}s vs {archive['sql']['seconds']}s)",
        )
        if "naive" in archive:
            naive_per_row = _per_row(archive["naive"])
            speedup = round(naive_per_row / _per_row(archive["ours"]), 1)
            bound = round(naive_per_row / _per_row(archive["sql"]), 1)
            missed = archive["ours"]["changed"] - archive["naive"]["changed"]
            add(
                f"archive_old_scenes at least 50x faster than the naive loop ({scale})",
                speedup >= 50,
                f"{speedup}x per archived row (the single UPDATE: {bound}x); the OFFSET "
                f"loop also skipped {missed:,} of the scenes it should have archived",
            )
        recalc = ops["recalculate_xp"]
        ratio = _ratio(recalc["ours"]["seconds"], recalc["sql"]["seconds"])
        add(
            f"recalculate_xp within 2x of one UPDATE ... FROM (aggregate) ({scale})",
            ratio <= 2,
            f"{ratio}x ({recalc['ours']['seconds']}s vs {recalc['sql']['seconds']}s)",
        )
        validate = ops["validate_data_integrity"]
        ratio = _ratio(validate["ours"]["seconds"], validate["sql"]["seconds"])
        add(
            f"validate_data_integrity within 2x of the bare detection queries ({scale})",
            ratio <= 2,
            f"{ratio}x ({validate['ours']['seconds']}s vs {validate['sql']['seconds']}s, "
            f"{validate['ours']['findings']:,} findings recorded)",
        )
        worst = max(m["ours"]["p99_batch_ms"] or 0 for m in ops.values())
        add(f"p99 batch transaction under 250 ms ({scale})", worst < 250, f"worst {worst} ms")
        rate = data["generate"]["rows_per_s"]
        add(
            f"create_test_data at least 50,000 rows/s ({scale})", rate >= 50_000, f"{rate:,} rows/s"
        )
    if {"small", "large"} <= set(scales):
        for name in list(scales["small"]["operations"]) + ["export_characters"]:
            small = _peak(scales["small"], name)
            large = _peak(scales["large"], name)
            growth = round((large / small - 1) * 100, 1)
            add(
                f"{name}: peak memory at 1M scenes within 10% of 100k",
                growth <= 10,
                f"{small} MB -> {large} MB ({growth:+}%)",
            )
    return found


def _peak(scale_data, name):
    if name == "export_characters":
        return scale_data["export"]["peak_rss_mb"]
    return scale_data["operations"][name]["ours"]["peak_rss_mb"]


def markdown(results):
    lines = [
        "# make bench",
        "",
        f"{results['machine']['date']}, Python {results['machine']['python']}, "
        f"{results['machine']['cpus']} CPUs; the whole run took {results['wall_seconds']}s.",
        "",
        "| scale | operation | ours (s) | one SQL statement (s) | ratio | naive loop (s) "
        "| rows/s | p99 batch (ms) | queries/batch | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scale, data in results["scales"].items():
        for name, m in data["operations"].items():
            ours, sql, naive = m["ours"], m["sql"], m.get("naive")
            lines.append(
                f"| {scale} | {name} | {ours['seconds']} | {sql['seconds']} | "
                f"{_ratio(ours['seconds'], sql['seconds'])}x | "
                f"{naive['seconds'] if naive else '-'} | {ours['rows_per_s']:,} | "
                f"{ours['p99_batch_ms']} | {ours['queries_per_batch']} | {ours['peak_rss_mb']} |"
            )
    lines += [
        "",
        "| scale | create_test_data rows | seconds | rows/s | export (s) | export peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for scale, data in results["scales"].items():
        g, e = data["generate"], data["export"]
        lines.append(
            f"| {scale} | {g['rows']:,} | {g['seconds']} | {g['rows_per_s']:,} | "
            f"{e['seconds']} | {e['peak_rss_mb']} |"
        )
    celery = next((d["celery"] for d in results["scales"].values() if "celery" in d), None)
    if celery:
        lines += [
            "",
            f"Celery through real Redis to a real worker ({celery['runs']} runs): enqueue to "
            f"start {celery['enqueue_to_start_ms_median']} ms median "
            f"(max {celery['enqueue_to_start_ms_max']} ms); a run with nothing to do costs "
            f"{celery['empty_run_via_worker_ms_median']} ms through the worker and "
            f"{celery['empty_run_inline_ms_median']} ms inline.",
        ]
    lines += ["", "## Targets", ""]
    for target in results["targets"]:
        lines.append(
            f"- {'met' if target['met'] else '**not met**'}: {target['name']}: {target['detail']}"
        )
    return "\n".join(lines) + "\n"


def chart(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = list(results["scales"])
    scenes = [results["scales"][s]["generate"]["table_rows"]["scenes"] for s in scales]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in LABELS:
        rates = [results["scales"][s]["operations"][name]["ours"]["rows_per_s"] for s in scales]
        axis.plot(scenes, rates, marker="o", label=LABELS[name])
    axis.set_xscale("log")
    axis.set_xlabel("scenes in the database")
    axis.set_ylabel("rows per second (inline, batch size 1000)")
    axis.set_title("tg-maintenance throughput against scale (PostgreSQL)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results, directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "results.md").write_text(markdown(results))
    chart(results, directory / "throughput.png")
