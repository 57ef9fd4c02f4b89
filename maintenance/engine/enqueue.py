"""Sending a recorded run to the workers through the broker, failing fast when the
broker cannot be reached or does not answer."""

import uuid

from celery import current_app
from kombu.utils.url import maybe_sanitize_url

from maintenance import oneline, operations
from maintenance.engine import partitions
from maintenance.engine.interrupts import sigint_deferred
from maintenance.engine.runs import create_run
from maintenance.engine.states import Status
from maintenance.engine.triggers import REQUESTED_BY_HEADER, TRIGGER_HEADER
from maintenance.models import LeasedWork, MaintenanceRun, RunPartition

# Seconds any one broker step (connect, check, publish) may take. The check and the
# publish each get one attempt, so an unreachable or silent broker is said within
# 2 * BROKER_TIMEOUT (< 5 s). These options go only on the connections made here, never
# into CELERY_BROKER_TRANSPORT_OPTIONS: a worker's blocking BRPOP must not time out.
BROKER_TIMEOUT = 2.0
CONNECT_TIMEOUT = BROKER_TIMEOUT  # kept for callers of the old name
_BOUNDED = {
    "socket_timeout": BROKER_TIMEOUT,
    "socket_connect_timeout": BROKER_TIMEOUT,
    "max_retries": 0,
}


class BrokerUnavailable(Exception):
    pass


def _broker() -> str:
    return maybe_sanitize_url(current_app.conf.broker_url)


def bounded_connection():
    """A broker connection whose every socket operation gives up after BROKER_TIMEOUT."""
    return current_app.connection_for_write(
        connect_timeout=BROKER_TIMEOUT, transport_options=dict(_BOUNDED)
    )


def check_broker() -> None:
    """Raise BrokerUnavailable unless the broker answers within BROKER_TIMEOUT."""
    try:
        with bounded_connection() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT)
            # Connecting is not answering: a silent server accepts and then never replies.
            client = getattr(connection.default_channel, "client", None)
            if client is not None and hasattr(client, "ping"):
                client.ping()
    except Exception as error:  # kombu and redis-py raise transport-specific errors
        raise BrokerUnavailable(
            f"the broker at {_broker()} is unreachable ({oneline.first_line(error)})"
        ) from None


def _publish(unit: LeasedWork, connection=None) -> None:
    """Publish a run, or each partition of a partitioned run, to the operation's task,
    looked up by name in the Celery app (the engine does not import the task layer); a
    message carries only the run id (and the partition's number)."""
    if isinstance(unit, MaintenanceRun) and unit.is_partitioned:
        with connection or bounded_connection() as conn:
            for partition in partitions.of(unit).filter(status=Status.QUEUED):
                partition.run = unit
                _new_task_id(partition)
                _publish(partition, conn)
        return
    run = unit.run if isinstance(unit, RunPartition) else unit
    kwargs = {"run_id": run.pk}
    if isinstance(unit, RunPartition):
        kwargs["partition"] = unit.number
    task = current_app.tasks[f"maintenance.{run.operation}"]
    with connection or bounded_connection() as conn:
        task.apply_async(
            kwargs=kwargs,
            task_id=unit.celery_task_id,
            headers={TRIGGER_HEADER: run.trigger, REQUESTED_BY_HEADER: run.requested_by},
            connection=conn,
            # The command follows the run in the database, never through results:
            # no subscription to a result backend that could hang.
            ignore_result=True,
            retry=False,
            # No time limits in the message: the worker applies its own
            # (maintenance/worker_limits.py), so this process's settings never matter.
            time_limit=None,
            soft_time_limit=None,
        )


def _new_task_id(unit: LeasedWork) -> None:
    """A new task id for each sending, so a stale copy of an older message is
    recognisably stale."""
    unit.celery_task_id = str(uuid.uuid4())
    type(unit).objects.filter(pk=unit.pk).update(celery_task_id=unit.celery_task_id)


def enqueue(run: MaintenanceRun, connection=None) -> None:
    """Publish a new run. One that could not be published is recorded failed, never
    left queued."""
    try:
        _publish(run, connection)
    except BaseException as error:  # Ctrl-C included: the run must not stay queued
        interrupted = isinstance(error, KeyboardInterrupt)
        reason = "interrupted" if interrupted else oneline.first_line(error)
        message = f"could not enqueue on {_broker()}: {reason}"
        MaintenanceRun.objects.filter(pk=run.pk, status=MaintenanceRun.Status.QUEUED).fail(message)
        if run.is_partitioned:
            partitions.settle(run.pk)
        if interrupted or not isinstance(error, Exception):
            raise
        raise BrokerUnavailable(message) from None


def _label(unit: LeasedWork) -> str:
    if isinstance(unit, RunPartition):
        return f"partition {unit.number} of run #{unit.run_id}"
    return f"run #{unit.pk}"


def send(run: LeasedWork) -> None:
    """Send a queued run or partition again (resumed, re-queued after its slice, or its
    message lost) under a new task id. When the broker is down it stays queued and the
    sweeper sends it later."""
    _new_task_id(run)
    try:
        _publish(run)
    except Exception as error:
        raise BrokerUnavailable(
            f"could not send {_label(run)} on {_broker()}: {oneline.first_line(error)}"
        ) from None


def start(operation_name: str, raw_params: dict, **origin) -> MaintenanceRun:
    """Validate, check the broker, record and publish a run. Raises UnknownOperation or
    ParameterError (nothing written) or BrokerUnavailable (nothing, or a failed run)."""
    operations.get(operation_name).clean(raw_params)
    check_broker()
    with sigint_deferred():  # recorded means published or failed, never just queued
        run = create_run(operation_name, raw_params, celery_task_id=str(uuid.uuid4()), **origin)
        enqueue(run)
    return run
