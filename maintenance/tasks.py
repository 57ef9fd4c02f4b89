"""Celery tasks of the maintenance service: one per registered operation, named
maintenance.<operation>. Tasks stay thin; the rules live in operations/."""

import socket

from celery import shared_task
from django.db import InterfaceError, OperationalError

from maintenance import heartbeat, operations
from maintenance.triggers import run_from_task


@shared_task(name="maintenance.ping")
def ping():
    """Answer from a worker: proves the broker round trip and names who answered."""
    return {"pong": True, "hostname": socket.gethostname()}


@shared_task(name="maintenance.heartbeat", ignore_result=True)
def heartbeat_task(**kwargs):
    """Sent by beat every minute; the worker that runs it records that both are alive."""
    request = heartbeat_task.request
    heartbeat.record(
        getattr(request, "hostname", None) or socket.gethostname(),
        _headers(request)["periodic_task_name"] or "",
    )


def _headers(request):
    # A worker puts custom message headers (periodic_task_name, maintenance_trigger) on
    # the request itself; Task.apply() keeps them in request.headers.
    given = getattr(request, "headers", None) or {}
    return {
        name: getattr(request, name, None) or given.get(name)
        for name in ("periodic_task_name", "maintenance_trigger", "maintenance_requested_by")
    }


def _operation_task(operation):
    @shared_task(
        name=f"maintenance.{operation.name}",
        bind=True,
        # A database that is down when the task starts: try again later, not fail.
        autoretry_for=(OperationalError, InterfaceError),
        retry_backoff=2,
        retry_backoff_max=60,
        max_retries=5,
    )
    def run_operation(self, *args, **kwargs):
        # Positional args (a schedule's "args") are refused as a recorded failed run,
        # not a TypeError that nobody records.
        return run_from_task(
            operation.name,
            kwargs,
            task_id=self.request.id,
            headers=_headers(self.request),
            args=args,
        )

    run_operation.__doc__ = operation.description
    return run_operation


OPERATION_TASKS = {
    operation.name: _operation_task(operation) for operation in operations.all_operations()
}
