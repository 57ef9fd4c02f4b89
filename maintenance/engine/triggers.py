"""Turning a task delivery into a run: which run, started by whom."""

from datetime import datetime, timedelta

from django.utils import timezone

from maintenance.engine import messages
from maintenance.engine.runner import INLINE, execute
from maintenance.engine.runs import create_run, cut_error, record_rejected, screen
from maintenance.models import MaintenanceRun, RunPartition
from maintenance.operations.base import ParameterError
from maintenance.reporting import partition_summary, run_summary
from maintenance.schedules import (
    DUE_AT_HEADER,
    SCHEDULE_ERROR_KWARG,
    SENT_BY_HEADER,
    last_changed_by,
)

Trigger = MaintenanceRun.Trigger
# Message headers that say who sent a task. django-celery-beat adds periodic_task_name;
# the CLI and the admin add maintenance_trigger.
TRIGGER_HEADER = "maintenance_trigger"
REQUESTED_BY_HEADER = "maintenance_requested_by"
# A due time in a header counts within these bounds (a message kept through a long
# outage, clocks a little apart); outside them the run counts from its creation.
DUE_AT_OLDEST = timedelta(days=7)
DUE_AT_SKEW = timedelta(minutes=5)


def trigger_from(headers):
    explicit = headers.get(TRIGGER_HEADER)
    if explicit in (Trigger.CLI, Trigger.ADMIN):
        return explicit
    if headers.get("periodic_task_name"):
        return Trigger.BEAT
    return Trigger.API


def _origin(headers, task_id) -> dict:
    trigger = trigger_from(headers)
    schedule = _text(headers.get("periodic_task_name"), 200)
    return {
        "trigger": trigger,
        "periodic_task_name": schedule,
        "requested_by": _text(headers.get(REQUESTED_BY_HEADER), 150),
        "celery_task_id": _text(task_id, 255),
        # Beat runs what an admin last saved: name them on the run.
        "schedule_changed_by": last_changed_by(schedule) if trigger == Trigger.BEAT else "",
        "sent_by": _text(headers.get(SENT_BY_HEADER), 200),
        # Only a schedule's message has a due time.
        "triggered_at": _moment(headers.get(DUE_AT_HEADER)) if schedule else None,
    }


def _text(value, limit: int) -> str:
    return cut_error(value if isinstance(value, str) else "")[:limit]


def _moment(value) -> datetime | None:
    """A due time from a header: an ISO time with a zone, not in the future (beyond clock
    skew) and not older than a message plausibly waits. Anything else is ignored, so a
    forged header cannot make beat skip a schedule or coalesce a run into an old one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    now = timezone.now()
    if not now - DUE_AT_OLDEST <= moment <= now + DUE_AT_SKEW:
        return None
    return moment


def _refusal(kwargs, args) -> str | None:
    """Why a message cannot be a run at all, before any operation looks at it."""
    if SCHEDULE_ERROR_KWARG in kwargs:
        return cut_error(f"the schedule's arguments cannot be read: {kwargs[SCHEDULE_ERROR_KWARG]}")
    if args:
        return "maintenance tasks take keyword arguments only; put them in kwargs"
    try:
        screen(kwargs)
    except ParameterError as error:
        return str(error)
    return None


def run_from_task(
    operation_name, kwargs, *, task_id, headers, args=(), budget=INLINE, worker="", send=None
):
    """Execute the run a task message stands for and return its summary.

    A message carries either `run_id` (the CLI and the admin record the run first), with
    `partition` for one partition of a partitioned run, or the operation's parameters
    (beat). A redelivered message finds its run again by run_id or task id, and the
    runner resumes it from its checkpoint. Input that cannot be a run becomes a failed
    run that says why. A partitioned run is not run here: `send` sends its partitions,
    each to be run by its own message."""
    kwargs = dict(kwargs)
    task_id = _text(task_id, 255)  # as stored: a NUL or a newline in it cannot reach SQL
    if "partition" in kwargs and "run_id" in kwargs:
        return _run_partition(operation_name, kwargs, task_id, budget, worker)
    origin = _origin(headers, task_id)
    problem = _refusal(kwargs, args)
    if problem is not None:
        given = {**kwargs, "<args>": list(args)} if args else kwargs
        return run_summary(
            _once(
                operation_name,
                task_id,
                origin,
                lambda: record_rejected(operation_name, given, problem, **origin),
            )
        )
    by_id = "run_id" in kwargs
    run_id = kwargs.pop("run_id", None)
    if by_id:
        run = _recorded_run(operation_name, run_id)
        if run is None:
            run = record_rejected(operation_name, {"run_id": run_id}, "no such run", **origin)
            return run_summary(run)
        if _stale(run, task_id):
            return run_summary(run)
    else:
        run = _redelivered_run(operation_name, task_id)
    if run is None:
        run = _once(
            operation_name, task_id, origin, lambda: _new_run(operation_name, kwargs, origin)
        )
        if _stale(run, task_id):
            return run_summary(run)  # a late copy of a message the run has been sent anew
    if run.is_partitioned and send is not None:
        if run.status == MaintenanceRun.Status.QUEUED:
            send(run)  # one message per queued partition
        return run_summary(run)
    return run_summary(execute(run, budget=budget, worker=worker))


def _new_run(operation_name, kwargs, origin) -> MaintenanceRun:
    try:
        return create_run(operation_name, kwargs, **origin)
    except (ParameterError, TypeError) as error:
        return record_rejected(operation_name, kwargs, error, **origin)


def _once(operation_name, task_id, origin, make) -> MaintenanceRun:
    """One run per message (engine/messages.py), however often it is delivered."""
    return messages.once_per_message(
        origin["celery_task_id"],
        make,
        operation=str(operation_name),
        periodic_task_name=origin["periodic_task_name"],
        sent_by=origin["sent_by"],
        due_at=origin["triggered_at"],
    )


def _run_partition(operation_name, kwargs, task_id, budget, worker):
    """One partition of a recorded run; the summary is the run's, with this partition's
    own state under "partition" (its task fails when the partition failed)."""
    run = _recorded_run(operation_name, kwargs["run_id"])
    number = kwargs["partition"]
    partition = None
    if run is not None and isinstance(number, int) and not isinstance(number, bool):
        partition = RunPartition.objects.filter(run=run, number=number).first()
    if partition is None:
        origin = {"trigger": Trigger.API, "celery_task_id": cut_error(task_id or "")[:255]}
        rejected = record_rejected(operation_name, kwargs, "no such run partition", **origin)
        return run_summary(rejected)
    if not _stale(partition, task_id):
        partition = execute(partition, budget=budget, worker=worker)
    run.refresh_from_db()
    return {**run_summary(run), "partition": partition_summary(partition)}


def _stale(run, task_id) -> bool:
    """A message the run has been sent again since (resumed, re-queued, or re-sent by the
    sweeper): only the newest one may run it, so copies never pile up or wait on each
    other. A redelivery of the newest message (acks_late) is not stale."""
    return bool(task_id and run.celery_task_id and task_id != run.celery_task_id)


def _recorded_run(operation_name, run_id):
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        return None
    return MaintenanceRun.objects.filter(pk=run_id, operation=operation_name).first()


def _redelivered_run(operation_name, task_id):
    if not task_id:
        return None
    return MaintenanceRun.objects.filter(operation=operation_name, celery_task_id=task_id).first()
