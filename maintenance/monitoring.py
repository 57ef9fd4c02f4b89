"""Health of the maintenance service, for alerting (monitor_validation) and the admin.

Per operation: the last run, the last success, failures in the period, and whether it
is overdue against its own schedule. Then the heartbeat, and counts of the game data.

A schedule that cannot be evaluated (a solar schedule without `ephem`, a clocked time
that has passed, an unknown time zone, an invalid crontab field) makes its operation's
check UNKNOWN with a one-line detail; the rest of the report stands. Every text shown
(details, run errors, host names) is one line of at most DETAIL_LIMIT characters.
"""

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, F, Q, Sum
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from chronicles.models import Character, Chronicle, Scene
from maintenance import heartbeat, operations
from maintenance.engine.findings_over_time import resume_chain
from maintenance.engine.states import ACTIVE
from maintenance.models import Finding, MaintenanceRun
from maintenance.reporting import throttle_text, throttled_now

OK, WARNING, CRITICAL, UNKNOWN = "OK", "WARNING", "CRITICAL", "UNKNOWN"
# Nagios plugin exit codes; CRITICAL outranks UNKNOWN, which outranks WARNING.
SEVERITY = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
RANK = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
DETAIL_LIMIT = 2000
Status = MaintenanceRun.Status


def one_line(text: object, limit: int = DETAIL_LIMIT) -> str:
    """`text` as one printable line of at most `limit` characters: run errors can be
    long tracebacks with control characters, and must not break a Nagios line."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_line(error: BaseException) -> str:
    return one_line(f"{type(error).__name__}: {error}")


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def __post_init__(self):
        self.detail = one_line(self.detail)


def worst_status(statuses: Iterable[str]) -> str:
    return max(statuses, key=RANK.get, default=OK)


def worst(checks):
    return worst_status(c.status for c in checks)


def exit_code(health: str) -> int:
    return SEVERITY.get(health, SEVERITY[UNKNOWN])


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
        "error": one_line(run.error) if run.error else None,
        "throttled_s": round(run.throttled_s, 1),
        "throttle_reason": one_line(run.throttle_reason) if run.throttle_reason else None,
        "throttled_now": throttled_now(run),
    }


class Unevaluable(Exception):
    """A schedule whose next due time cannot be worked out."""


def _due(periodic_task: PeriodicTask, since: datetime | None, now: datetime) -> datetime:
    if periodic_task.clocked_id and periodic_task.clocked.clocked_time < now:
        # A one-off that beat has not fired and disabled: nothing says when it is due.
        raise Unevaluable(f"clocked time {_iso(periodic_task.clocked.clocked_time)} has passed")
    reference = since or periodic_task.date_changed
    return now + periodic_task.schedule.remaining_estimate(reference)


def _schedule_dues(task_name: str, since, now) -> tuple[list[str], list[datetime], list[str]]:
    """(names, due times, problems) of the enabled schedules of `task_name`. Each is read
    on its own: one broken row (say an unknown time zone) must not hide the others."""
    rows = PeriodicTask.objects.filter(task=task_name, enabled=True).order_by("name")
    names, dues, problems = [], [], []
    for pk, name in rows.values_list("pk", "name"):
        names.append(name)
        try:
            periodic_task = PeriodicTask.objects.select_related(
                "interval", "crontab", "solar", "clocked"
            ).get(pk=pk)
            dues.append(_due(periodic_task, since, now))
        except DatabaseError:
            raise  # the database itself: the whole report is UNKNOWN
        except Exception as error:  # celery, ephem, zoneinfo and crontab parsing all differ
            detail = str(error) if isinstance(error, Unevaluable) else error_line(error)
            problems.append(f"cannot evaluate schedule {name!r}: {one_line(detail, 300)}")
    return names, dues, problems


def _earliest(dues: list[datetime]) -> datetime | None:
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
    succeeded_at = last_success.finished_at if last_success else None
    schedules, dues, unevaluable = _schedule_dues(
        f"maintenance.{operation.name}", succeeded_at, now
    )
    next_due = _earliest(dues)
    grace = timedelta(hours=settings.MAINTENANCE_OVERDUE_GRACE_HOURS)
    overdue = next_due is not None and now > next_due + grace

    problems, status = [], OK
    if recent_outcomes and recent_outcomes[0] == Status.FAILED:
        repeated = len(recent_outcomes) == 3 and set(recent_outcomes) == {Status.FAILED}
        status = CRITICAL if repeated else WARNING
        failed = real.filter(status=Status.FAILED).order_by("-created_at", "-pk").first()
        times = "the last 3 runs failed" if repeated else f"run #{failed.pk} failed"
        problems.append(f"{times}: {one_line(failed.error, 1000)}")
    if overdue:
        status = worst_status([status, WARNING])
        last_text = f"last success {_iso(succeeded_at)}" if succeeded_at else "never succeeded"
        problems.append(f"overdue: due by {_iso(next_due)} ({last_text})")
    if unevaluable:
        status = worst_status([status, UNKNOWN])
        problems.extend(unevaluable)
    # Backing off for the database is the engine working, not a fault: said, not warned.
    active = list(runs.filter(status__in=ACTIVE))
    throttled = [f"run #{run.pk} {throttle_text(run)}" for run in active if throttled_now(run)]
    if problems:
        detail = "; ".join(problems)
    elif not schedules:
        detail = "not scheduled" + (f"; last success {_iso(succeeded_at)}" if succeeded_at else "")
    elif succeeded_at:
        detail = f"last success {_iso(succeeded_at)}; next due {_iso(next_due)}"
    else:
        detail = f"not run yet; first run due {_iso(next_due)}"
    if throttled:
        detail = "; ".join([detail, *throttled])

    info = {
        "last_run": _run_brief(last),
        "last_success_at": _iso(succeeded_at),
        "runs_in_period": runs.filter(created_at__gte=since).count(),
        "failures_in_period": runs.filter(created_at__gte=since, status=Status.FAILED).count(),
        "throttled_s_in_period": round(
            runs.filter(created_at__gte=since).aggregate(total=Sum("throttled_s"))["total"] or 0, 1
        ),
        "schedules": schedules,
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
            f"last heartbeat {age}s ago from {one_line(last.hostname, 255)} (limit {limit}s): "
            "beat or the worker is down"
        )
        return Check("heartbeat", CRITICAL, detail), last
    return Check("heartbeat", OK, f"{age}s ago from {one_line(last.hostname, 255)}"), last


def _archive_params():
    """The archive schedule's own parameters, so 'eligible' means what beat would archive."""
    archive = operations.get("archive_old_scenes")
    rows = PeriodicTask.objects.filter(task="maintenance.archive_old_scenes", enabled=True)
    for kwargs in rows.order_by("name").values_list("kwargs", flat=True):
        try:
            raw = json.loads(kwargs or "{}")
            if isinstance(raw, dict):
                return archive.clean(raw)[0]
        except (ValueError, TypeError, AttributeError, RecursionError):
            continue  # bad kwargs: beat cannot run that schedule either
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
    """Unfixed findings of the latest completed validation (what is wrong right now),
    counting the whole resume chain: the findings the failed attempts recorded before
    it resumed them. A problem recorded by two attempts is counted once."""
    latest = (
        MaintenanceRun.objects.filter(
            operation="validate_data_integrity", status=Status.SUCCEEDED, dry_run=False
        )
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")
        .first()
    )
    if latest is None:
        return {"open": None, "by_rule": {}, "run_id": None, "run_ids": [], "checked_at": None}
    run_ids = resume_chain(latest)
    distinct = (
        Finding.objects.filter(run_id__in=run_ids, fixed=False)
        .values_list("rule", "model", "object_id")
        .order_by()  # the default ordering would join the DISTINCT and defeat it
        .distinct()
    )
    by_rule: dict[str, int] = {}
    for rule, _, _ in distinct.iterator():
        by_rule[rule] = by_rule.get(rule, 0) + 1
    return {
        "open": sum(by_rule.values()),
        "by_rule": dict(sorted(by_rule.items())),
        "run_id": latest.pk,
        "run_ids": run_ids,
        "checked_at": _iso(latest.finished_at),
    }


def new_findings(since) -> tuple[dict, Check]:
    """Findings that appeared (and were resolved) in the period, by the runs that
    finished in it comparing themselves with the run before (findings_over_time)."""
    runs = MaintenanceRun.objects.filter(
        status=Status.SUCCEEDED, finished_at__gte=since, findings_new__isnull=False
    )
    sums = runs.aggregate(new=Sum("findings_new"), resolved=Sum("findings_resolved"))
    new, resolved = sums["new"] or 0, sums["resolved"] or 0
    limit = settings.MAINTENANCE_NEW_FINDINGS_WARNING
    detail = f"{new:,} new and {resolved:,} resolved findings in the period"
    if new > limit:
        check = Check("new_findings", WARNING, f"{detail}: more than {limit:,}")
    else:
        check = Check("new_findings", OK, detail)
    return {"new_in_period": new, "resolved_in_period": resolved}, check


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
    trend, trend_check = new_findings(since)
    findings |= trend
    checks.append(trend_check)
    return {
        "timestamp": _iso(now),
        "period_hours": period_hours,
        "health": worst(checks),
        "checks": [asdict(check) for check in checks],
        "operations": per_operation,
        "heartbeat": {
            "seen_at": _iso(last_beat.seen_at) if last_beat else None,
            "hostname": one_line(last_beat.hostname, 255) if last_beat else None,
        },
        "characters": characters,
        "chronicles": chronicles,
        "scenes": scenes,
        "findings": findings,
    }
