"""A run as the JSON object of DESIGN.md, and as lines for people."""

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
    }


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
