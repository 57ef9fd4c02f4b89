"""Health of the maintenance service, for alerting (monitor_validation) and the admin.

Per operation: the last run, the last success, failures in the period, and whether it
is overdue against its own schedule. Then the heartbeat, and counts of the game data.
Then stuck work, for when the sweeper does not fix it: runs past their lease, runs queued
too long, the broker (and the depth of the maintenance queue), and schedules whose due
time passed with no run recorded (`missed_due`, long before `overdue` fires).

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
from django.db.models import Count, F, Max, Q, Sum
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from chronicles.models import Character, Chronicle, Scene
from maintenance import heartbeat, operations
from maintenance.engine import leases, partitions
from maintenance.engine.findings_over_time import resume_chain
from maintenance.engine.states import ACTIVE
from maintenance.models import Finding, MaintenanceRun, RunPartition, TaskMessage
from maintenance.observability import queue as broker_queue
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


# --- stuck work: what the sweeper should have fixed, and the broker -------------------

LEASE_EXPIRED, NOT_STARTED = "lease_expired", "not_started"
STUCK_SHOWN = 5  # units named in one check line; the rest are counted
STUCK_LIMIT = 100  # units of each kind listed in the JSON
# The heartbeat has its own check, and records no runs to look for.
HEARTBEAT_TASK = "maintenance.heartbeat"
# Beat stamps last_run_at as it sends, a moment after the due time it sends for.
BEAT_SLACK = timedelta(seconds=60)


@dataclass
class Stuck:
    run_id: int
    partition: int | None  # the partition's number; None: the run itself
    operation: str
    status: str
    since: datetime | None  # the last heartbeat (or start), or when it was queued
    reason: str

    def label(self) -> str:
        unit = f"run #{self.run_id}"
        if self.partition is not None:
            unit = f"partition {self.partition} of {unit}"
        return f"{unit} {one_line(self.operation, 64)} {self.status}"

    def as_json(self) -> dict:
        return {**asdict(self), "since": _iso(self.since)}


def _stuck(unit, reason: str, since: datetime | None) -> Stuck:
    number = unit.number if isinstance(unit, RunPartition) else None
    run_id = unit.run_id if isinstance(unit, RunPartition) else unit.pk
    return Stuck(run_id, number, unit.operation, unit.status, since, reason)


def _no_sign_of_life_since(cutoff: datetime) -> Q:
    # As leases.is_dead: the last heartbeat, else the start; neither at all is dead too.
    silent = Q(heartbeat_at__isnull=True) & (Q(started_at__lt=cutoff) | Q(started_at__isnull=True))
    return Q(heartbeat_at__lt=cutoff) | silent


def _split_run_at_rest(run: MaintenanceRun, cutoff: datetime) -> Stuck | None:
    """A partitioned run lives in its partitions. None waiting or working, and nothing
    done within the lease: the settle that should have ended it was lost."""
    units = RunPartition.objects.filter(run_id=run.pk)
    if units.filter(status__in=(*partitions.PENDING, *ACTIVE)).exists():
        return None  # waiting ones are stuck_queued's; working ones are judged alone
    signs = units.aggregate(beat=Max("heartbeat_at"), done=Max("finished_at"))
    moments = (signs["beat"], signs["done"], run.heartbeat_at, run.started_at)
    last = max((moment for moment in moments if moment), default=None)
    if last is not None and last >= cutoff:
        return None
    return _stuck(run, LEASE_EXPIRED, last)


def expired_leases(now: datetime) -> tuple[list[Stuck], int]:
    """Runs and partitions running, pausing or cancelling with no heartbeat within the
    lease (at most STUCK_LIMIT of each kind, oldest first), and how many in all."""
    cutoff = now - leases.lease()
    dead = _no_sign_of_life_since(cutoff)
    runs = MaintenanceRun.objects.filter(dead, status__in=ACTIVE, partitions=1)
    units = RunPartition.objects.filter(dead, status__in=ACTIVE).select_related("run")
    found = [
        _stuck(unit, LEASE_EXPIRED, unit.heartbeat_at or unit.started_at)
        for query in (runs, units)
        for unit in query.order_by(F("heartbeat_at").asc(nulls_first=True), "pk")[:STUCK_LIMIT]
    ]
    total = runs.count() + units.count()
    split = MaintenanceRun.objects.filter(status__in=ACTIVE, partitions__gt=1).order_by("pk")
    for run in split[:STUCK_LIMIT]:  # one active run per operation: a handful
        if (at_rest := _split_run_at_rest(run, cutoff)) is not None:
            found.append(at_rest)
            total += 1
    return found, total


def not_started(now: datetime) -> tuple[list[Stuck], int]:
    """Runs and partitions queued longer than MAINTENANCE_REQUEUE_AFTER_SECONDS that no
    worker started: the ones the sweeper re-sends (at most STUCK_LIMIT of each kind)."""
    cutoff = now - timedelta(seconds=settings.MAINTENANCE_REQUEUE_AFTER_SECONDS)
    runs = MaintenanceRun.objects.filter(status=Status.QUEUED, queued_at__lt=cutoff)
    units = RunPartition.objects.filter(
        status=Status.QUEUED, queued_at__lt=cutoff, run__status=Status.RUNNING
    ).select_related("run")
    found = [
        _stuck(unit, NOT_STARTED, unit.queued_at)
        for query in (runs, units)
        for unit in query.order_by("queued_at", "pk")[:STUCK_LIMIT]
    ]
    return found, runs.count() + units.count()


def _oldest_first(stuck: list[Stuck]) -> list[Stuck]:
    # No sign of life at all first: it has been silent longest.
    return sorted(stuck, key=lambda s: (s.since is not None, s.since.timestamp() if s.since else 0))


def _to_second(moment: datetime | None) -> datetime | None:
    # Shown to people: to the nearest second.
    if moment is None:
        return None
    return (moment + timedelta(milliseconds=500)).replace(microsecond=0)


def _listing(stuck: list[Stuck], total: int, since_text: str) -> str:
    shown = [
        f"{s.label()}{since_text} {_iso(_to_second(s.since))}"
        if s.since
        else f"{s.label()}, no heartbeat or start recorded"
        for s in stuck[:STUCK_SHOWN]
    ]
    return _joined(shown, total)


def _joined(shown: list[str], total: int) -> str:
    """One line of the first STUCK_SHOWN of `total` items, then how many more."""
    if total > len(shown):
        shown = [*shown, f"and {total - len(shown):,} more"]
    return "; ".join(shown)


def stuck_checks(now: datetime) -> tuple[list[Stuck], list[Check]]:
    dead, dead_total = expired_leases(now)
    waiting, waiting_total = not_started(now)
    dead, waiting = _oldest_first(dead), _oldest_first(waiting)
    lease_s = settings.MAINTENANCE_LEASE_SECONDS
    requeue_s = settings.MAINTENANCE_REQUEUE_AFTER_SECONDS
    if dead_total:
        detail = f"{dead_total:,} past the {lease_s}s lease, not interrupted: "
        running = Check(
            "stuck_running", CRITICAL, detail + _listing(dead, dead_total, ", last heartbeat")
        )
    else:
        running = Check("stuck_running", OK, f"no run or partition past the {lease_s}s lease")
    if waiting_total:
        detail = f"{waiting_total:,} queued over {requeue_s}s, not started: "
        queued = Check("stuck_queued", WARNING, detail + _listing(waiting, waiting_total, " since"))
    else:
        queued = Check("stuck_queued", OK, f"no run or partition queued over {requeue_s}s")
    return [*dead, *waiting], [running, queued]


def broker_check(state: broker_queue.BrokerState) -> Check:
    queue = settings.MAINTENANCE_QUEUE
    if not state.reachable:
        return Check("broker", CRITICAL, state.error)
    if state.depth is None:
        detail = (
            f"{state.url} answers, but the depth of queue {queue} is unknown: {state.depth_error}"
        )
        return Check("broker", WARNING, detail)
    return Check("broker", OK, f"{state.url} answers; {state.depth:,} waiting in queue {queue}")


def _in_force_since(task: PeriodicTask) -> datetime:
    """Since when the schedule has been in force as it is: its last change (creation,
    edit). Beat's own save of last_run_at changes date_changed too, so once beat has
    sent the schedule, a little before that send counts instead."""
    if task.last_run_at is None:
        return task.date_changed
    return min(task.date_changed, task.last_run_at - BEAT_SLACK)


def missed_due_at(task: PeriodicTask, now: datetime, grace: timedelta) -> datetime | None:
    """The first due time after the schedule's latest run (any status), or after it came
    into force, when that passed more than `grace` ago: no run was recorded for it. Raises
    what evaluating the schedule raises."""
    runs = MaintenanceRun.objects.filter(periodic_task_name=task.name)
    last_run = runs.aggregate(last=Max("created_at"))["last"]
    reference = max(moment for moment in (last_run, _in_force_since(task)) if moment)
    due = _due(task, reference, now)
    if task.start_time and due < task.start_time:
        due = task.start_time  # beat sends nothing before it, then at once
    if task.expires and due >= task.expires:
        return None
    if task.one_off and task.total_run_count:
        return None  # sent once already: beat disables it
    return due if now > due + grace else None


def _sent_for(name: str, due: datetime) -> TaskMessage | None:
    """Beat's record of having sent the schedule's due time `due` (or a later one)."""
    return (
        TaskMessage.objects.filter(periodic_task_name=name, due_at__gte=due)
        .order_by("due_at")
        .first()
    )


def missed_due_check(now: datetime) -> Check:
    """CRITICAL for a due time nobody sent; WARNING for one beat sent that no worker has
    taken yet (queued behind long runs, or no worker at all)."""
    grace = timedelta(seconds=settings.MAINTENANCE_MISSED_DUE_GRACE_SECONDS)
    rows = (
        PeriodicTask.objects.filter(enabled=True, task__startswith="maintenance.")
        .exclude(task=HEARTBEAT_TASK)
        .order_by("name")
    )
    checked, unsent, untaken = 0, [], []
    for pk, name in rows.values_list("pk", "name"):
        try:
            task = PeriodicTask.objects.select_related(
                "interval", "crontab", "solar", "clocked"
            ).get(pk=pk)
            due = missed_due_at(task, now, grace)
        except DatabaseError:
            raise  # the database itself: the whole report is UNKNOWN
        except Exception:
            continue  # cannot be evaluated: its operation's check says so (UNKNOWN)
        checked += 1
        if due is None:
            continue
        sent = _sent_for(name, due)
        shown = f"{one_line(name, 200)!r} due {_iso(_to_second(due))}"
        if sent is None:
            unsent.append((due, shown))
        else:
            by = one_line(sent.sent_by or "?", 200)
            untaken.append((due, f"{shown} (sent by beat {by})"))
    if not unsent and not untaken:
        return Check("missed_due", OK, f"{checked:,} schedules: no due time without a run")
    grace_s = int(grace.total_seconds())
    parts = []
    if unsent:
        parts.append(f"no run recorded {grace_s}s after the due time: " + _capped(unsent))
    if untaken:
        parts.append(f"sent, but no worker has taken it in {grace_s}s: " + _capped(untaken))
    return Check("missed_due", CRITICAL if unsent else WARNING, "; ".join(parts))


def _capped(found: list[tuple[datetime, str]]) -> str:
    return _joined([text for _, text in sorted(found)[:STUCK_SHOWN]], len(found))


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
    broker = broker_queue.probe()
    checks.append(broker_check(broker))
    stuck, stuck_found = stuck_checks(now)
    checks.extend(stuck_found)
    checks.append(missed_due_check(now))
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
        "queue_depth": broker.depth,
        "stuck": [unit.as_json() for unit in stuck],
    }
