"""A run as the JSON object of DESIGN.md, and as lines for people."""

from maintenance.engine.control import is_stale
from maintenance.models import MaintenanceRun


def run_summary(run):
    return {
        "run_id": run.pk,
        "operation": run.operation,
        "status": run.status,
        "trigger": run.trigger,
        "dry_run": run.dry_run,
        "params": run.params,
        "processed": run.processed,
        "changed": run.changed,
        "findings": run.findings,
        "batches": run.batches,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": run.duration_s,
        "error": run.error or None,
        # progress and control (DESIGN.md "Run states and operator control")
        "total": run.total,
        "rows_per_s": rows_per_s(run),
        "eta_s": eta_s(run),
        "stale": is_stale(run),
        "throttled_s": 0.0,
        "throttle_reason": None,
        "attempts": run.attempts,
        "partitions": [],
    }


def rows_per_s(run) -> float | None:
    """Rows looked at per second of batch work (time waiting in the queue not counted)."""
    if not run.processed or run.work_seconds <= 0:
        return None
    return round(run.processed / run.work_seconds, 1)


def eta_s(run) -> float | None:
    """Seconds of work left at the current rate, while the run is not finished."""
    rate = rows_per_s(run)
    if run.is_finished or not rate or run.total is None:
        return None
    return round(max(run.total - run.processed, 0) / rate, 1)


def run_progress_line(run) -> str:
    """One line for `maintenance_run list/show`: status, progress, rate and ETA."""
    status = (
        f"{run.status} (stale: no heartbeat since {run.heartbeat_at:%H:%M:%S})"
        if (is_stale(run))
        else run.status
    )
    done = f"{run.processed:,}" + (f"/{run.total:,}" if run.total is not None else "")
    if run.total:
        done += f" ({min(100, 100 * run.processed // run.total)}%)"
    parts = [f"#{run.pk} {run.operation}{' (dry run)' if run.dry_run else ''}", status, done]
    rate, eta = rows_per_s(run), eta_s(run)
    if rate:
        parts.append(f"{rate:,.0f} rows/s")
    if eta is not None:
        parts.append(f"ETA {eta:,.0f}s")
    parts.append(f"{run.changed:,} changed, {run.findings:,} findings, attempt {run.attempts}")
    if run.error:
        parts.append(run.error)
    return " | ".join(parts)


def unfixed_findings(run):
    return run.finding_set.filter(fixed=False).count()


def outcome_line(run):
    """One line saying how the run ended."""
    verb = "would change" if run.dry_run else "changed"
    label = f"{run.operation}{' (dry run)' if run.dry_run else ''}, run #{run.pk}"
    if run.status == MaintenanceRun.Status.SKIPPED:
        return f"{label} skipped: {run.error}"
    counts = (
        f"processed {run.processed:,}, {verb} {run.changed:,}, "
        f"{run.findings:,} findings in {run.batches:,} batches"
    )
    duration = f" in {run.duration_s:.2f}s" if run.duration_s is not None else ""
    if run.status == MaintenanceRun.Status.FAILED:
        return f"{label} failed{duration}: {run.error} ({counts})"
    resumed = f" (resumed from run #{run.resumed_from_id})" if run.resumed_from_id else ""
    return f"{label} {run.status}{duration}: {counts}{resumed}"


def findings_by_rule(run, sample=5):
    """[(rule, total, fixed, [sample findings])], the biggest rule first."""
    from django.db.models import Count, Q

    groups = (
        run.finding_set.values("rule")
        .annotate(total=Count("id"), fixed=Count("id", filter=Q(fixed=True)))
        .order_by("-total", "rule")
    )
    return [
        (
            group["rule"],
            group["total"],
            group["fixed"],
            list(run.finding_set.filter(rule=group["rule"]).order_by("object_id")[:sample]),
        )
        for group in groups
    ]


def admin_findings_path(run):
    return f"/admin/maintenance/finding/?run__id__exact={run.pk}"
