"""Health of the maintenance service, for alerting (monitor_validation) and the admin.

Per operation: the last run, the last success, failures in the period, and whether it
is overdue against its own schedule. Then the heartbeat, and counts of the game data.
"""

import json
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from chronicles.models import Character, Chronicle, Scene
from maintenance import heartbeat, operations
from maintenance.models import MaintenanceRun
from maintenance.schedules import enabled_schedules

OK, WARNING, CRITICAL = "OK", "WARNING", "CRITICAL"
SEVERITY = {OK: 0, WARNING: 1, CRITICAL: 2}
Status = MaintenanceRun.Status


@dataclass
class Check:
    name: str
    status: str
    detail: str


def worst(checks):
    return max((c.status for c in checks), key=SEVERITY.get, default=OK)


def _iso(moment):
    return moment.isoformat() if moment else None


def _run_brief(run):
    if run is None:
        return None
    return {
        "run_id": run.pk,
        "status": run.status,
        "trigger": run.trigger,
        "dry_run": run.dry_run,
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "error": run.error or None,
    }


def _next_due(schedules, since, now):
    """When the earliest of the schedules expects a run after `since`."""
    dues = []
    for periodic_task in schedules:
        reference = since or periodic_task.date_changed
        dues.append(now + periodic_task.schedule.remaining_estimate(reference))
    if not dues:
        return None
    # Shown to people: to the nearest second.
    return (min(dues) + timedelta(milliseconds=500)).replace(microsecond=0)


def operation_health(operation, since, now):
    runs = MaintenanceRun.objects.filter(operation=operation.name)
    real = runs.filter(dry_run=False)
    last = runs.exclude(status=Status.SKIPPED).order_by("-created_at", "-pk").first()
    last_success = real.filter(status=Status.SUCCEEDED).order_by("-finished_at").first()
    recent_outcomes = list(
        real.filter(status__in=[Status.SUCCEEDED, Status.FAILED])
        .order_by("-created_at", "-pk")
        .values_list("status", flat=True)[:3]
    )
    schedules = enabled_schedules(f"maintenance.{operation.name}")
    succeeded_at = last_success.finished_at if last_success else None
    next_due = _next_due(schedules, succeeded_at, now)
    grace = timedelta(hours=settings.MAINTENANCE_OVERDUE_GRACE_HOURS)
    overdue = next_due is not None and now > next_due + grace

    problems, status = [], OK
    if recent_outcomes and recent_outcomes[0] == Status.FAILED:
        repeated = len(recent_outcomes) == 3 and set(recent_outcomes) == {Status.FAILED}
        status = CRITICAL if repeated else WARNING
        failed = real.filter(status=Status.FAILED).order_by("-created_at", "-pk").first()
        times = "the last 3 runs failed" if repeated else f"run #{failed.pk} failed"
        problems.append(f"{times}: {failed.error}")
    if overdue:
        status = status if status == CRITICAL else WARNING
        last_text = f"last success {_iso(succeeded_at)}" if succeeded_at else "never succeeded"
        problems.append(f"overdue: due by {_iso(next_due)} ({last_text})")
    if problems:
        detail = "; ".join(problems)
    elif not schedules:
        detail = "not scheduled" + (f"; last success {_iso(succeeded_at)}" if succeeded_at else "")
    elif succeeded_at:
        detail = f"last success {_iso(succeeded_at)}; next due {_iso(next_due)}"
    else:
        detail = f"not run yet; first run due {_iso(next_due)}"

    info = {
        "last_run": _run_brief(last),
        "last_success_at": _iso(succeeded_at),
        "runs_in_period": runs.filter(created_at__gte=since).count(),
        "failures_in_period": runs.filter(created_at__gte=since, status=Status.FAILED).count(),
        "schedules": [periodic_task.name for periodic_task in schedules],
        "next_due_at": _iso(next_due),
        "overdue": overdue,
        "status": status,
    }
    return info, Check(operation.name, status, detail)


def heartbeat_check(now):
    last = heartbeat.last()
    limit = int(heartbeat.max_age().total_seconds())
    if last is None:
        return Check(
            "heartbeat",
            WARNING,
            "no heartbeat recorded yet: start beat and a worker and run setup_schedules",
        ), None
    age = int((now - last.seen_at).total_seconds())
    if heartbeat.is_stale(last, now):
        detail = (
            f"last heartbeat {age}s ago from {last.hostname} (limit {limit}s): "
            "beat or the worker is down"
        )
        return Check("heartbeat", CRITICAL, detail), last
    return Check("heartbeat", OK, f"{age}s ago from {last.hostname}"), last


def _archive_params():
    """The archive schedule's own parameters, so 'eligible' means what beat would archive."""
    archive = operations.get("archive_old_scenes")
    for periodic_task in enabled_schedules("maintenance.archive_old_scenes"):
        try:
            params, _, _ = archive.clean(json.loads(periodic_task.kwargs or "{}"))
            return params
        except ValueError:
            continue
    return archive.clean({})[0]


def data_counts(since, now):
    characters = Character.objects.aggregate(
        total=Count("id"),
        created_in_period=Count("id", filter=Q(created_at__gte=since)),
        modified_in_period=Count("id", filter=Q(updated_at__gte=since)),
    )
    chronicles = Chronicle.objects.aggregate(
        total=Count("id"),
        active=Count("id", filter=Q(archived_at__isnull=True)),
        archived=Count("id", filter=Q(archived_at__isnull=False)),
    )
    scenes = Scene.objects.aggregate(
        total=Count("id"), archived=Count("id", filter=Q(archived_at__isnull=False))
    )
    archive = operations.get("archive_old_scenes")
    params = _archive_params()
    scenes["eligible_for_archiving"] = archive.eligible(
        params, archive.prepare(params, now)
    ).count()
    return characters, chronicles, scenes


def open_findings():
    """Unfixed findings of the latest completed validation (what is wrong right now)."""
    latest = (
        MaintenanceRun.objects.filter(
            operation="validate_data_integrity", status=Status.SUCCEEDED, dry_run=False
        )
        .order_by("-finished_at")
        .first()
    )
    if latest is None:
        return {"open": None, "by_rule": {}, "run_id": None, "checked_at": None}
    by_rule = dict(
        latest.finding_set.filter(fixed=False)
        .values_list("rule")
        .annotate(n=Count("id"))
        .order_by("rule")
    )
    return {
        "open": sum(by_rule.values()),
        "by_rule": by_rule,
        "run_id": latest.pk,
        "checked_at": _iso(latest.finished_at),
    }


def collect(period_hours, now=None):
    now = now or timezone.now()
    since = now - timedelta(hours=period_hours)
    checks, per_operation = [], {}
    for operation in operations.all_operations():
        per_operation[operation.name], check = operation_health(operation, since, now)
        checks.append(check)
    beat_check, last_beat = heartbeat_check(now)
    checks.append(beat_check)
    characters, chronicles, scenes = data_counts(since, now)
    findings = open_findings()
    return {
        "timestamp": _iso(now),
        "period_hours": period_hours,
        "health": worst(checks),
        "checks": [asdict(check) for check in checks],
        "operations": per_operation,
        "heartbeat": {
            "seen_at": _iso(last_beat.seen_at) if last_beat else None,
            "hostname": last_beat.hostname if last_beat else None,
        },
        "characters": characters,
        "chronicles": chronicles,
        "scenes": scenes,
        "findings": findings,
    }
