"""Celery tasks of the maintenance service: one per registered operation, named
maintenance.<operation>, and the every-minute heartbeat that also sweeps. Tasks stay
thin; the rules live in operations/, the run's life in engine/."""

import logging
import socket
import threading
from datetime import datetime

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_shutting_down
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from maintenance import heartbeat, oneline, operations
from maintenance.engine.enqueue import BrokerUnavailable, send
from maintenance.engine.runner import Budget
from maintenance.engine.states import ACTIVE
from maintenance.engine.sweeper import sweep
from maintenance.engine.triggers import REQUESTED_BY_HEADER, TRIGGER_HEADER, run_from_task
from maintenance.models import LeasedWork, MaintenanceRun, RunPartition
from maintenance.outage import OUTAGE, OUTAGE_ERRORS, quiet_outages_of
from maintenance.schedules import DUE_AT_HEADER, SENT_BY_HEADER

logger = logging.getLogger(__name__)
# A task whose database is down goes back on the queue after 2, 4, 8 ... at most 60 s.
DB_RETRY_FIRST_SECONDS = 2
DB_RETRY_MAX_SECONDS = 60
OUTAGE_SINCE_HEADER = "maintenance_outage_since"
# The worker's own loggers that may meet a database outage: one line per error.
quiet_outages_of(
    __name__,
    "maintenance.engine.runner",
    "maintenance.engine.sweeper",
    "maintenance.engine.leases",
    "celery.app.trace",
)
# Set in this process when its worker begins a warm shutdown (solo and thread pools).
_shutting_down = threading.Event()


class RunFailed(Exception):
    """Raised after a failed run is recorded, so the task is a FAILURE in Flower and
    `celery events` too. The run's summary rides along for callers in this process."""

    summary: dict = {}

    @classmethod
    def of(cls, summary: dict) -> "RunFailed":
        partition = summary.get("partition")
        if partition:
            failure = cls(
                f"partition {partition['number']} of run #{summary['run_id']} failed: "
                f"{partition['error']}"
            )
        else:
            failure = cls(f"run #{summary['run_id']} failed: {summary['error']}")
        failure.summary = summary
        return failure


@worker_shutting_down.connect
def _ask_runs_to_give_back(sender=None, **kwargs):
    """A warm shutdown (SIGTERM, a deploy): ask this worker's runs to stop at their next
    batch boundary as interrupted, so they go back on the queue instead of being killed.
    Prefork pool processes learn it from their run row, read with every batch."""
    _shutting_down.set()
    try:
        asked = sum(
            model.objects.filter(status__in=ACTIVE, worker=str(sender)).update(stop_requested=True)
            for model in (MaintenanceRun, RunPartition)
        )
        logger.warning("worker %s shutting down: asked %d runs to stop", sender, asked)
    except Exception as error:  # the database, or a SIGTERM while the worker still imports
        # Each run stops at its slice or lease instead; one line, not a shutdown traceback.
        logger.warning("could not ask the runs of %s to stop: %s", sender, oneline.describe(error))
    finally:
        connection.close()


def _requeue(run: LeasedWork) -> None:
    """An interrupted run or partition goes straight back on the queue; if the broker
    cannot take it, the sweeper sends it later."""
    if type(run).objects.filter(pk=run.pk).requeue():
        _send_or_leave_to_sweeper(run)


def _send_or_leave_to_sweeper(run: LeasedWork) -> None:
    try:
        send(run)
    except BrokerUnavailable as error:
        logger.warning("%s; the sweeper will send it", error)


def _ended_since(summary: dict, moment) -> bool:
    finished = summary.get("finished_at")
    return finished is None or datetime.fromisoformat(finished) >= moment


def worker_budget() -> Budget:
    """A worker's process is lent, not given: a run gives it back after its slice, on a
    warm shutdown, or at the soft time limit."""
    return Budget(
        slice_seconds=settings.MAINTENANCE_SLICE_SECONDS,
        should_yield=_shutting_down.is_set,
        interruptions=(SoftTimeLimitExceeded,),
        requeue=_requeue,
    )


@shared_task(name="maintenance.ping")
def ping():
    """Answer from a worker: proves the broker round trip and names who answered."""
    return {"pong": True, "hostname": socket.gethostname()}


@shared_task(name="maintenance.heartbeat", ignore_result=True)
def heartbeat_task(**kwargs):
    """Sent by beat every minute; the worker that runs it records that both are alive,
    then sweeps: dead runs are interrupted and re-queued, lost messages sent again."""
    request = heartbeat_task.request
    try:
        heartbeat.record(
            getattr(request, "hostname", None) or socket.gethostname(),
            _headers(request)["periodic_task_name"] or "",
        )
        sweep(send=send)
    except OUTAGE_ERRORS as error:
        # The next minute's heartbeat tries again; an outage is one line a minute.
        OUTAGE.failed(error)
        logger.warning("heartbeat not recorded: %s", oneline.first_line(error))
        return
    OUTAGE.answered()


def _headers(request):
    # A worker puts custom message headers (periodic_task_name, maintenance_trigger) on
    # the request itself; Task.apply() keeps them in request.headers.
    given = getattr(request, "headers", None) or {}
    return {
        name: getattr(request, name, None) or given.get(name)
        for name in (
            "periodic_task_name",
            TRIGGER_HEADER,
            REQUESTED_BY_HEADER,
            SENT_BY_HEADER,
            DUE_AT_HEADER,
            OUTAGE_SINCE_HEADER,
        )
    }


def _operation_task(operation):
    @shared_task(name=f"maintenance.{operation.name}", bind=True, max_retries=None)
    def run_operation(self, *args, **kwargs):
        delivered_at = timezone.now()
        try:
            # Positional args (a schedule's "args") are refused as a recorded failed
            # run, not a TypeError that nobody records.
            summary = run_from_task(
                operation.name,
                kwargs,
                task_id=self.request.id,
                headers=_headers(self.request),
                args=args,
                budget=worker_budget(),
                worker=str(getattr(self.request, "hostname", None) or ""),
                send=_send_or_leave_to_sweeper,
            )
        except (OperationalError, InterfaceError) as error:
            raise _wait_for_the_database(self, error) from None
        _answered_after_outage(self)
        # A partition's message fails when its partition failed, not when a sibling did.
        outcome = summary.get("partition") or summary
        if outcome["status"] == MaintenanceRun.Status.FAILED and _ended_since(
            summary, delivered_at
        ):
            raise RunFailed.of(summary)
        # A stale copy for a run that had failed before it came: that failure is
        # already one FAILURE task; this delivery did nothing.
        return summary

    run_operation.__doc__ = operation.description
    return run_operation


class DatabaseUnavailable(Exception):
    """The database did not answer; the message waits on the queue for it."""


def _wait_for_the_database(task, error: Exception):
    """Put the message back on the queue, with backoff, until the database answers: the
    copy goes out before this delivery is acknowledged, so no due run is ever lost."""
    tries = task.request.retries or 0
    delay = min(DB_RETRY_MAX_SECONDS, DB_RETRY_FIRST_SECONDS * 2 ** min(tries, 16))
    OUTAGE.failed(error)
    given = _headers(task.request)
    since = given[OUTAGE_SINCE_HEADER]
    if not isinstance(since, str) or len(since) > 64:
        since = timezone.now().isoformat()
    since = oneline.escape(since)
    headers = {name: value for name, value in given.items() if value}
    headers[OUTAGE_SINCE_HEADER] = since
    reason = DatabaseUnavailable(
        f"the database did not answer (try {tries + 1} since {since}): {oneline.first_line(error)}"
    )
    return task.retry(exc=reason, countdown=delay, headers=headers, max_retries=None)


def _answered_after_outage(task) -> None:
    since = _headers(task.request)[OUTAGE_SINCE_HEADER]
    if task.request.retries and isinstance(since, str):
        logger.info(
            "%s[%s] got through after %d tries: the database did not answer from %s",
            task.name,
            oneline.escape(str(task.request.id))[:255],
            task.request.retries,
            oneline.escape(since)[:64],
        )
    OUTAGE.answered()


OPERATION_TASKS = {
    operation.name: _operation_task(operation) for operation in operations.all_operations()
}
