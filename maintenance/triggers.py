"""Turning a task delivery into a run: which run, started by whom."""

from maintenance.models import MaintenanceRun
from maintenance.operations.base import ParameterError
from maintenance.reporting import run_summary
from maintenance.runner import execute
from maintenance.runs import create_run, record_rejected

Trigger = MaintenanceRun.Trigger
# Message headers that say who sent a task. django-celery-beat adds periodic_task_name;
# the CLI and the admin add maintenance_trigger.
TRIGGER_HEADER = "maintenance_trigger"
REQUESTED_BY_HEADER = "maintenance_requested_by"


def trigger_from(headers):
    explicit = headers.get(TRIGGER_HEADER)
    if explicit in (Trigger.CLI, Trigger.ADMIN):
        return explicit
    if headers.get("periodic_task_name"):
        return Trigger.BEAT
    return Trigger.API


def run_from_task(operation_name, kwargs, *, task_id, headers):
    """Execute the run a task message stands for and return its summary.

    A message carries either `run_id` (the CLI and the admin record the run first) or
    the operation's parameters (beat). A redelivered message finds its run again by
    run_id or task id, and the runner resumes it from its checkpoint."""
    kwargs = dict(kwargs)
    by_id = "run_id" in kwargs
    run_id = kwargs.pop("run_id", None)
    origin = {
        "trigger": trigger_from(headers),
        "periodic_task_name": str(headers.get("periodic_task_name") or "")[:200],
        "requested_by": str(headers.get(REQUESTED_BY_HEADER) or "")[:150],
        "celery_task_id": task_id or "",
    }
    if by_id:
        run = _recorded_run(operation_name, run_id)
        if run is None:
            run = record_rejected(operation_name, {"run_id": run_id}, "no such run", **origin)
            return run_summary(run)
    else:
        run = _redelivered_run(operation_name, task_id)
    if run is None:
        try:
            run = create_run(operation_name, kwargs, **origin)
        except ParameterError as error:
            return run_summary(record_rejected(operation_name, kwargs, error, **origin))
    return run_summary(execute(run))


def _recorded_run(operation_name, run_id):
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        return None
    return MaintenanceRun.objects.filter(pk=run_id, operation=operation_name).first()


def _redelivered_run(operation_name, task_id):
    if not task_id:
        return None
    return MaintenanceRun.objects.filter(operation=operation_name, celery_task_id=task_id).first()
