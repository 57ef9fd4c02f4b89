"""A run as the JSON object of DESIGN.md, and as lines for people."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from maintenance.engine.control import is_stale
from maintenance.engine.runner import THROTTLE_STEP_SECONDS
from maintenance.engine.states import ACTIVE
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
        "throttled_s": round(run.throttled_s, 1),
        "throttle_reason": run.throttle_reason or None,
        "throttled_now": throttled_now(run),
        "attempts": run.attempts,
        "partitions": [partition_summary(p) for p in partitions_of(run)],
        # findings over time (DESIGN.md "Findings over time, revert and apply")
        "findings_new": run.findings_new,
        "findings_resolved": run.findings_resolved,
        "findings_open": run.findings_open,
        # scheduling (README "Scheduling you can trust"): the beat that sent it, the due
        # time or moment it was asked for, and the run it was skipped or coalesced for
        "sent_by": run.sent_by or None,
        "triggered_at": (run.triggered_at or run.created_at).isoformat(),
        "skipped_because_of": run.skipped_because_of_id,
    }


def trend_text(run) -> str:
    """'3 new, 5 resolved since the run before, 12 open', or '' for a run that checks no
    rules (or has not succeeded)."""
    if run.findings_new is None:
        return ""
    return (
        f"{run.findings_new:,} new, {run.findings_resolved:,} resolved since the run before, "
        f"{run.findings_open or 0:,} open"
    )


def partitions_of(run) -> list:
    if not run.is_partitioned:
        return []
    return list(run.partition_set.order_by("number"))


def partition_summary(partition) -> dict:
    """One partition of a partitioned run, as an item of the run's "partitions"."""
    return {
        "number": partition.number,
        "status": partition.status,
        "lower_id": partition.lower_id,
        "upper_id": partition.upper_id,
        "processed": partition.processed,
        "total": partition.total,
        "changed": partition.changed,
        "findings": partition.findings,
        "batches": partition.batches,
        "attempts": partition.attempts,
        "worker": partition.worker or None,
        "rows_per_s": rows_per_s(partition),
        "throttled_s": round(partition.throttled_s, 1),
        "error": partition.error or None,
    }


def rows_per_s(run) -> float | None:
    """Rows looked at per second of batch work (time waiting in the queue not counted).
    A partitioned run's partitions work side by side: its rate is theirs added up."""
    if getattr(run, "is_partitioned", False):
        rates = [rows_per_s(p) for p in run.partition_set.filter(status__in=ACTIVE)]
        if any(rates):
            return round(sum(rate for rate in rates if rate), 1)
        elapsed = (run.finished_at or timezone.now()) - (run.started_at or timezone.now())
        seconds = elapsed.total_seconds()
        return round(run.processed / seconds, 1) if run.processed and seconds > 0 else None
    if not run.processed or run.work_seconds <= 0:
        return None
    return round(run.processed / run.work_seconds, 1)


def eta_s(run) -> float | None:
    """Seconds of work left at the current rate, while the run is not finished."""
    rate = rows_per_s(run)
    if run.is_finished or not rate or run.total is None:
        return None
    return round(max(run.total - run.processed, 0) / rate, 1)


def progress_text(unit) -> str:
    """'processed / total (share%), rate' of a run or a partition, for the admin."""
    text = f"{unit.processed:,}"
    if unit.total:
        share = min(100, 100 * unit.processed // unit.total)
        text = f"{unit.processed:,} / {unit.total:,} ({share}%)"
    if rate := rows_per_s(unit):
        text += f", {rate:,.0f} rows/s"
    return text


def progress_line(run) -> str:
    """progress_text with the ETA, and whether it is throttled now: the admin's progress."""
    text = progress_text(run)
    if (eta := eta_s(run)) is not None:
        text += f", ETA {eta:,.0f}s"
    if throttled_now(run):
        text += ", throttled now"
    return text


def throttled_now(run) -> bool:
    """Whether the run is backing off for the database's sake at this moment: active,
    and its last throttle recorded within the last couple of seconds."""
    if run.status not in ACTIVE or run.throttled_at is None:
        return False
    # While it lasts, a throttle is recorded every second, and after each retried batch
    # (which may wait up to the lock timeout).
    recorded_every = THROTTLE_STEP_SECONDS + settings.MAINTENANCE_LOCK_TIMEOUT_MS / 1000
    return timezone.now() - run.throttled_at <= timedelta(seconds=recorded_every + 2)


def throttle_text(run) -> str:
    """'throttled 12.5s now: <reason>', or '' for a run that never waited."""
    if not run.throttled_s and not throttled_now(run):
        return ""
    now = " now" if throttled_now(run) else ""
    return f"throttled {run.throttled_s:,.1f}s{now}: {run.throttle_reason}"


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
    split = f" in {run.partitions} partitions" if run.is_partitioned else ""
    label = f"#{run.pk} {run.operation}{' (dry run)' if run.dry_run else ''}{split}"
    parts = [label, status, done]
    rate, eta = rows_per_s(run), eta_s(run)
    if rate:
        parts.append(f"{rate:,.0f} rows/s")
    if eta is not None:
        parts.append(f"ETA {eta:,.0f}s")
    parts.append(f"{run.changed:,} changed, {run.findings:,} findings, attempt {run.attempts}")
    if throttled := throttle_text(run):
        parts.append(throttled)
    if trend := trend_text(run):
        parts.append(f"findings: {trend}")
    if run.error:
        parts.append(run.error)
    return " | ".join(parts)


def partition_lines(run) -> list[str]:
    """One line per partition of a partitioned run, for `maintenance_run show`."""
    lines = []
    for partition in partitions_of(run):
        low = "start" if partition.lower_id is None else f"{partition.lower_id:,}"
        high = "end" if partition.upper_id is None else f"{partition.upper_id:,}"
        done = f"{partition.processed:,}" + (
            f"/{partition.total:,}" if partition.total is not None else ""
        )
        parts = [f"  partition {partition.number} (ids {low}..{high})", partition.status, done]
        if rate := rows_per_s(partition):
            parts.append(f"{rate:,.0f} rows/s")
        parts.append(f"{partition.changed:,} changed, attempt {partition.attempts}")
        if partition.worker:
            parts.append(partition.worker)
        if partition.error:
            parts.append(partition.error)
        lines.append(" | ".join(parts))
    return lines


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
    throttled = f"; {throttle_text(run)}" if run.throttled_s else ""
    trend = f"; findings: {trend_text(run)}" if trend_text(run) else ""
    return f"{label} {run.status}{duration}: {counts}{resumed}{throttled}{trend}"


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
