"""The runner: executes a recorded run batch by batch.

Each batch runs in one transaction with its findings, the run's counters, its checkpoint
and heartbeat; the run row is only updated while this runner holds the lease, so a
runner that lost its lease commits nothing. Transient database errors are retried with
backoff; anything else fails the run with a readable error, leaving the data as of the
last committed batch, from where the next trigger resumes.
"""

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from maintenance import claims, oneline, operations
from maintenance.models import Finding, MaintenanceRun, RunBatch

logger = logging.getLogger(__name__)
RUNNING = MaintenanceRun.Status.RUNNING


class LeaseLost(Exception):
    """Another runner took this run over; this one must stop without writing."""


@dataclass
class BatchReport:
    """What the runner tells its caller after each committed batch (progress bars)."""

    run_id: int
    number: int
    processed: int
    changed: int
    findings: int
    seconds: float
    position: object
    total: int | None

    @classmethod
    def of(cls, run, batch):
        """The report of a committed RunBatch of `run`."""
        return cls(
            run_id=run.pk,
            number=batch.number,
            processed=batch.processed,
            changed=batch.changed,
            findings=batch.findings,
            seconds=batch.seconds,
            position=batch.position,
            total=run.total,
        )


def execute(run, on_batch=None):
    """Run `run` to its end (or skip it) and return it, refreshed."""
    claim = claims.claim(run)
    if not claim.ok:
        return run
    runner = _Runner(run, claim.token, on_batch or (lambda report: None))
    try:
        runner.run()
    except LeaseLost:
        logger.warning("run #%s was taken over by another runner; stopping", run.pk)
    except KeyboardInterrupt:
        with _sigint_held():  # a second Ctrl-C must not leave the run `running`
            _reset_interrupted_connection()
            # The signal may land between a batch's commit and the counter's update.
            committed = _committed_batches(run, runner.committed)
            runner.fail(
                f"interrupted (data is as of batch {committed}; "
                "the next trigger with the same parameters resumes from there)"
            )
        raise
    except Exception as error:  # the run records it; the caller reads run.error
        logger.exception("run #%s failed", run.pk)
        runner.fail(
            f"{_readable(error)} (data is as of batch {runner.committed}; "
            "the next trigger with the same parameters resumes from there)"
        )
    run.refresh_from_db()
    return run


def _committed_batches(run, known):
    """The run's committed batch count as the database has it (`known` if unreadable)."""
    try:
        count = MaintenanceRun.objects.filter(pk=run.pk).values_list("batches", flat=True).first()
    except DatabaseError:
        return known
    return known if count is None else count


@contextlib.contextmanager
def _sigint_held():
    """Ignore Ctrl-C while the run's end is recorded (main thread only: signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _readable(error):
    return oneline.describe(error)


def _reset_interrupted_connection() -> None:
    """A Ctrl-C can land in the middle of a query, leaving the database connection busy
    (psycopg: "connection in transaction status ACTIVE"). Drop it; the next query that
    records the run's end reconnects."""
    if connection.in_atomic_block:
        return
    raw = connection.connection
    if raw is not None:
        with contextlib.suppress(Exception):
            raw.rollback()
    with contextlib.suppress(Exception):
        connection.close()


def with_retries(action):
    """Call `action`, retrying transient database errors with exponential backoff."""
    attempts = settings.MAINTENANCE_DB_RETRIES
    for attempt in range(attempts + 1):
        try:
            return action()
        except (OperationalError, InterfaceError) as error:
            if attempt == attempts or connection.in_atomic_block:
                raise
            delay = settings.MAINTENANCE_RETRY_BACKOFF * 2**attempt
            logger.warning("database error (%s); retry %d in %.1fs", error, attempt + 1, delay)
            connection.close()  # the next query reconnects
            time.sleep(delay)


class _Runner:
    def __init__(self, run, token, on_batch):
        self.run_record = run
        self.token = token
        self.on_batch = on_batch
        self.operation = operations.get(run.operation)
        self.committed = run.batches  # the last batch number committed

    def _mine(self):
        return MaintenanceRun.objects.filter(pk=self.run_record.pk, lease_token=self.token)

    def run(self):
        checkpoint = with_retries(self._starting_checkpoint)
        self.committed = self.run_record.batches
        while not checkpoint["done"]:
            number = self.committed + 1
            checkpoint, report = with_retries(
                lambda n=number, c=checkpoint: self._commit_batch(n, c)
            )
            if report is not None:
                self.committed = number
                self.on_batch(report)
        with_retries(self._succeed)

    def _starting_checkpoint(self):
        """This run's own checkpoint when it is redelivered; else that of a failed run
        with the same parameters (resume); else a fresh start."""
        run = self.run_record
        run.refresh_from_db()
        if run.checkpoint and self._can_resume(run.checkpoint):
            return run.checkpoint
        source = None if run.checkpoint else self._resumable_run()
        if source is not None:
            checkpoint = {**source.checkpoint}
        else:
            context = self.operation.prepare(run.params, timezone.now())
            checkpoint = {"context": context, "position": None, "done": False}
        total = self.operation.count_remaining(
            run.params, checkpoint["context"], checkpoint["position"]
        )
        updated = self._mine().update(
            checkpoint=checkpoint, total=total, resumed_from=source, heartbeat_at=timezone.now()
        )
        if not updated:
            raise LeaseLost()
        run.refresh_from_db()
        return checkpoint

    def _resumable_run(self):
        run = self.run_record
        window = timedelta(hours=settings.MAINTENANCE_RESUME_WINDOW_HOURS)
        previous = (
            MaintenanceRun.objects.filter(
                operation=run.operation,
                status=MaintenanceRun.Status.FAILED,
                dry_run=run.dry_run,
                created_at__gte=timezone.now() - window,
                created_at__lt=run.created_at,
            )
            .exclude(pk=run.pk)
            .order_by("-created_at", "-pk")
            .first()
        )
        if previous is None or previous.params != run.params:
            return None
        if not previous.checkpoint or previous.checkpoint.get("done"):
            return None
        if not self._can_resume(previous.checkpoint):
            return None
        finished_since = MaintenanceRun.objects.filter(
            operation=run.operation,
            status=MaintenanceRun.Status.SUCCEEDED,
            created_at__gt=previous.created_at,
        ).exists()
        return None if finished_since else previous

    def _can_resume(self, checkpoint: dict) -> bool:
        """The operation's say on reusing `checkpoint` (e.g. the file is still the same)."""
        return self.operation.can_resume(self.run_record.params, checkpoint.get("context", {}))

    def _commit_batch(self, number, checkpoint):
        run = self.run_record
        started = time.perf_counter()
        with transaction.atomic():
            result = self.operation.run_batch(
                run.params,
                checkpoint["context"],
                checkpoint["position"],
                run.batch_size,
                run.dry_run,
            )
            new_checkpoint = {**checkpoint, "position": result.position, "done": result.done}
            now = timezone.now()
            counted = 1 if result.processed else 0
            if result.findings:
                Finding.objects.bulk_create(
                    [
                        Finding(
                            run_id=run.pk,
                            rule=f.rule,
                            model=f.model,
                            object_id=f.object_id,
                            message=f.message,
                            fixed=f.fixed,
                            before=f.before,
                            after=f.after,
                            created_at=now,
                        )
                        for f in result.findings
                    ]
                )
            seconds = time.perf_counter() - started
            logged = None
            if counted:
                logged = RunBatch.objects.create(
                    run_id=run.pk,
                    number=number,
                    position=result.position,
                    processed=result.processed,
                    changed=result.changed,
                    findings=len(result.findings),
                    changed_ids=result.changed_ids,
                    seconds=seconds,
                    committed_at=now,
                )
            updated = self._mine().update(
                processed=F("processed") + result.processed,
                changed=F("changed") + result.changed,
                findings=F("findings") + len(result.findings),
                batches=F("batches") + counted,
                checkpoint=new_checkpoint,
                heartbeat_at=now,
            )
            if not updated:
                raise LeaseLost()
        report = BatchReport.of(run, logged) if logged else None
        return new_checkpoint, report

    def _succeed(self):
        now = timezone.now()
        self._mine().update(
            status=MaintenanceRun.Status.SUCCEEDED,
            finished_at=now,
            heartbeat_at=now,
            lease_token="",
        )

    def fail(self, message):
        def record():
            self._mine().filter(status=RUNNING).update(
                status=MaintenanceRun.Status.FAILED,
                finished_at=timezone.now(),
                lease_token="",
                error=message,
            )

        try:
            with_retries(record)
        except (OperationalError, InterfaceError):
            logger.exception("could not record the failure of run #%s", self.run_record.pk)
