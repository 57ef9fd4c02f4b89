"""Sending a recorded run to the workers through the broker, failing fast when the
broker cannot be reached."""

import uuid

from celery import current_app
from kombu.utils.url import maybe_sanitize_url

from maintenance import operations
from maintenance.models import MaintenanceRun
from maintenance.runs import create_run
from maintenance.tasks import OPERATION_TASKS
from maintenance.triggers import REQUESTED_BY_HEADER, TRIGGER_HEADER

CONNECT_TIMEOUT = 3  # seconds: a missing broker is reported, not waited for


class BrokerUnavailable(Exception):
    pass


def _broker():
    return maybe_sanitize_url(current_app.conf.broker_url)


def check_broker():
    """Raise BrokerUnavailable unless the broker answers within a few seconds."""
    try:
        with current_app.connection_for_write(connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=CONNECT_TIMEOUT)
    except Exception as error:  # kombu raises transport-specific errors
        raise BrokerUnavailable(f"the broker at {_broker()} is unreachable ({error})") from None


def enqueue(run):
    """Publish `run` to its operation's task; the message carries only the run id."""
    task = OPERATION_TASKS[run.operation]
    try:
        task.apply_async(
            kwargs={"run_id": run.pk},
            task_id=run.celery_task_id,
            headers={TRIGGER_HEADER: run.trigger, REQUESTED_BY_HEADER: run.requested_by},
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        )
    except Exception as error:
        message = f"could not enqueue on {_broker()}: {error}"
        MaintenanceRun.objects.filter(pk=run.pk, status=MaintenanceRun.Status.QUEUED).update(
            status=MaintenanceRun.Status.FAILED, error=message
        )
        raise BrokerUnavailable(message) from None


def start(operation_name, raw_params, **origin):
    """Validate, check the broker, record and publish a run. Raises UnknownOperation or
    ParameterError (nothing written) or BrokerUnavailable."""
    operations.get(operation_name).clean(raw_params)
    check_broker()
    run = create_run(operation_name, raw_params, celery_task_id=str(uuid.uuid4()), **origin)
    enqueue(run)
    return run
