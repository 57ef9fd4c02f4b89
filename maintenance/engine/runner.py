"""The runner: executes a recorded run batch by batch until it ends or must stop.

Each batch runs in one transaction with its findings, its batch log row, the run's
counters, checkpoint and heartbeat; the run row is only updated while this runner holds
the lease, so a runner that lost it commits nothing. The same UPDATE tells the runner
whether the operator asked it to pause or cancel, or its worker to give the run back;
it then stops at that batch boundary. Transient database errors are retried with
backoff; anything else fails the run with a readable error, leaving the data as of the
last committed batch.

Gentle on a live database: before a batch the runner waits while the database is
unhealthy (engine/health.py); a batch bounded by its lock and statement timeouts
(engine/timeouts.py) that hits one is rolled back and retried after a backoff, smaller;
both waits are recorded on the run as throttled time. The batch size adapts to the
target batch time unless the run pins it (engine/batch_size.py).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from maintenance import oneline, operations
from maintenance.engine import events, findings_over_time, health, leases, partitions, timeouts
from maintenance.engine.batch_size import BatchSizer
from maintenance.engine.interrupts import (
    atomic_whole_commit,
    caused_by_interrupt,
    reset_interrupted_connection,
    sigint_held,
)
from maintenance.engine.iteration import BatchResult, RunContext
from maintenance.engine.states import ACTIVE, Status
from maintenance.models import Finding, LeasedWork, MaintenanceRun, RunBatch, RunPartition
from maintenance.outage import OUTAGE, OUTAGE_ERRORS

# The longest single backoff after a timed-out batch: an operator's pause or cancel
# waits at most this long (plus one batch) to be seen.
MAX_BACKOFF_SECONDS = 5.0
# A throttled run renews its lease and looks for a stop request this often.
THROTTLE_STEP_SECONDS = 1.0
# The checkpoint's record of timeouts since the last committed batch.
BACKOFF = "backoff"

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another runner took this run over; this one must stop without writing."""


class StatementTooSlow(Exception):
    """Batches keep hitting the statement timeout, however small: the run fails."""


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
    size: int | None = None

    @classmethod
    def of(cls, run: LeasedWork, batch: RunBatch) -> BatchReport:
        return cls(
            run_id=batch.run_id,
            number=batch.number,
            processed=batch.processed,
            changed=batch.changed,
            findings=batch.findings,
            seconds=batch.seconds,
            position=batch.position,
            total=run.total,
            size=batch.size,
        )


@dataclass
class Budget:
    """When a worker wants its process back: after `slice_seconds` of work, when
    `should_yield()` says the worker is shutting down, or when one of `interruptions`
    (the soft time limit) is raised. Inline runs have no budget."""

    slice_seconds: float | None = None
    should_yield: Callable[[], bool] = lambda: False
    interruptions: tuple[type[BaseException], ...] = ()
    # puts an interrupted run back on the queue; None leaves it to the sweeper
    requeue: Callable[[LeasedWork], None] | None = None
    started: float = field(default_factory=time.monotonic)

    def used_up(self) -> str:
        """Why the run must give the worker back now, or ''."""
        if self.should_yield():
            return "the worker is shutting down"
        if self.slice_seconds is not None and time.monotonic() - self.started >= self.slice_seconds:
            return f"its slice of {self.slice_seconds:g}s is used up"
        return ""


INLINE = Budget()


def execute(
    run: LeasedWork,
    on_batch: Callable[[BatchReport], None] | None = None,
    budget: Budget = INLINE,
    worker: str = "",
) -> LeasedWork:
    """Run `run` (a run, or one partition of a run) until it ends or must stop, and
    return it refreshed. A partitioned run is run here partition after partition."""
    if isinstance(run, MaintenanceRun) and run.is_partitioned:
        return _execute_partitions(run, on_batch, budget, worker)
    try:
        return _execute(run, on_batch, budget, worker)
    finally:
        if isinstance(run, RunPartition):
            # Whatever happened to the partition, its run follows (the fan-in).
            with sigint_held():
                with_retries(lambda: partitions.settle(run.run_id))


def _execute_partitions(run, on_batch, budget, worker) -> MaintenanceRun:
    """--inline: the partitions one after another in this process. Ctrl-C pauses the
    whole run (the partition under way at its batch boundary)."""
    try:
        for partition in partitions.of(run):
            if partition.status == Status.QUEUED:
                execute(partition, on_batch, budget, worker)
                partition.run.refresh_from_db()
                if partition.run.status not in (Status.RUNNING, Status.QUEUED):
                    break  # paused, cancelled or failed under us
    except KeyboardInterrupt:
        with sigint_held():
            MaintenanceRun.objects.filter(pk=run.pk).pause()
            partitions.settle(run.pk)
        raise
    run.refresh_from_db()
    return run


def _execute(run, on_batch, budget, worker) -> LeasedWork:
    claim = with_retries(lambda: leases.claim(run, worker))
    if not claim.ok:
        run.refresh_from_db()
        return run
    runner = _Runner(run, claim.token, on_batch or (lambda report: None), budget)
    ctrl_c = False
    try:
        runner.run()
    except LeaseLost:
        events.note(run, "stops", "another runner took it over")
    except KeyboardInterrupt:
        ctrl_c = True  # recorded below, once the traceback and its cursors are gone
    except budget.interruptions:
        # The transaction of the batch under way rolled back: stop as of the last one.
        runner.stop("interrupted by the time limit")
    except Exception as error:  # the run records it; the caller reads run.error
        # A Ctrl-C in Django's transaction cleanup surfaces as a database error.
        ctrl_c = caused_by_interrupt(error)
        if not ctrl_c:
            _fail(runner, run, error)
    if ctrl_c:
        with sigint_held():  # a second Ctrl-C must not leave the run active
            # The interrupted statement's half-read cursors (SQLite: its lock) live as
            # long as the traceback's frames: collect them before recording anything.
            gc.collect()
            reset_interrupted_connection()
            runner.pause_now()
            run.refresh_from_db()
        if run.status != Status.SUCCEEDED:  # its last batch may have committed first
            raise KeyboardInterrupt
        return run
    run.refresh_from_db()
    if run.status == Status.INTERRUPTED and budget.requeue is not None:
        budget.requeue(run)
        run.refresh_from_db()
    return run


def _fail(runner: _Runner, run: LeasedWork, error: Exception) -> None:
    if isinstance(error, OUTAGE_ERRORS):
        # An outage is one line per attempt (outage.py), not a traceback per run.
        OUTAGE.failed(error)
        logger.warning("run #%s failed: %s", run.pk, oneline.describe(error))
    else:
        logger.exception("run #%s failed", run.pk)
    then = (
        "resuming the run retries this partition from there"
        if isinstance(run, RunPartition)
        else "the next trigger with the same parameters resumes from there"
    )
    runner.fail(f"{oneline.describe(error)} (data is as of batch {runner.committed}; {then})")


def _walk_of(position) -> str:
    """Which walk of a chain a position is in ('' for a single walk)."""
    return position.get("walk", "") if isinstance(position, dict) else ""


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
            logger.warning(
                "database error (%s); retry %d in %.1fs",
                oneline.first_line(error),
                attempt + 1,
                delay,
            )
            connection.close()  # the next query reconnects
            time.sleep(delay)


class _Runner:
    def __init__(self, run, token, on_batch, budget: Budget):
        self.run_record = run
        self.token = token
        self.on_batch = on_batch
        self.budget = budget
        self.operation = operations.get(run.operation)
        self.committed = run.batches  # the last batch number committed
        self.context: RunContext | None = None
        self.sizer = BatchSizer(run.batch_size, settings.MAINTENANCE_TARGET_BATCH_MS)
        self.lock_timeouts = self.statement_timeouts = 0
        self.throttled = False
        self.start_attempts = 0
        self.succeeded = False

    def _mine(self):
        return type(self.run_record).objects.filter(pk=self.run_record.pk, lease_token=self.token)

    @property
    def run_id(self) -> int:
        """The run this unit's batches, findings and counters belong to."""
        unit = self.run_record
        return unit.run_id if isinstance(unit, RunPartition) else unit.pk

    @property
    def partition_number(self) -> int:
        unit = self.run_record
        return unit.number if isinstance(unit, RunPartition) else 0

    def _add_to_run(self, sums: dict, **values) -> None:
        """A partition's progress also counts on its run, which carries the sums (and
        the sign of life that keeps a partitioned run from looking dead)."""
        if isinstance(self.run_record, RunPartition):
            MaintenanceRun.objects.filter(pk=self.run_id).update(
                **{field: F(field) + value for field, value in sums.items()},
                heartbeat_at=timezone.now(),
                idle_attempts=0,  # progress: the run's resumes are not idle ones
                **values,
            )

    def run(self) -> None:
        checkpoint = with_retries(self._starting_checkpoint)
        self.committed = self.run_record.batches
        # Timeouts since the last committed batch outlive a slice: a batch too slow for
        # its statement timeout keeps shrinking, and fails the run, across slices.
        backoff = checkpoint.get(BACKOFF) or {}
        self.statement_timeouts = backoff.get("statement_timeouts", 0)
        self.sizer = BatchSizer(
            self.run_record.batch_size,
            settings.MAINTENANCE_TARGET_BATCH_MS,
            backoff.get("size") or self._last_size(),
        )
        first = True
        walk = _walk_of(checkpoint["position"])
        while not checkpoint["done"]:
            # At least one batch per slice: a run always makes progress when it runs.
            reason = "" if first else self.budget.used_up()
            if reason:
                events.note(self.run_record, "gives its worker back", reason)
                self.stop(f"interrupted: {reason}")
                return
            if not self._wait_while_unhealthy():
                return
            now_in = _walk_of(checkpoint["position"])
            if now_in != walk:
                if walk:  # not the first step into a chain's first walk
                    self.sizer.new_walk()
                walk = now_in
            number, size = self.committed + 1, self.sizer.size
            started = time.perf_counter()
            try:
                checkpoint, report, keep_going = with_retries(
                    lambda n=number, c=checkpoint, s=size: self._commit_batch(n, c, s)
                )
            except timeouts.BatchTimedOut as timeout:
                if not self._back_off(timeout, checkpoint, time.perf_counter() - started):
                    return
                continue
            first = False
            self.lock_timeouts = self.statement_timeouts = 0
            if report is not None:
                self.committed = number
                self.sizer.observe(report.seconds, report.processed)
                self.on_batch(report)
            if not keep_going and not checkpoint["done"]:
                self.stop("")
                return
        if not self.succeeded:  # e.g. a checkpoint that was already done
            with_retries(self._succeed_alone)

    def _succeed(self) -> None:
        """The success, with what it says about findings over time (a partitioned
        run's comes when its last partition settles it)."""
        self.succeeded = bool(self._mine().succeed(self.token))
        if self.succeeded and isinstance(self.run_record, MaintenanceRun):
            findings_over_time.summarise(self.run_id)

    def _succeed_alone(self) -> None:
        with transaction.atomic():
            self._succeed()

    def _last_size(self) -> int | None:
        """The size the run's last batch used, so a resumed run goes on at its pace."""
        if not self.run_record.batches:
            return None
        batches = RunBatch.objects.filter(
            run_id=self.run_id, partition=self.partition_number
        ).order_by("-number")
        return batches.values_list("size", flat=True).first()

    # --- throttling: waits for the database's sake, recorded on the run ---

    def _wait_while_unhealthy(self) -> bool:
        """Back off while the database's health says so; False when the run must stop."""
        while reason := with_retries(health.throttle_reason):
            if not self._throttle(reason, health.CACHE_SECONDS):
                return False
        return True

    def _back_off(self, timeout: timeouts.BatchTimedOut, checkpoint: dict, wasted: float) -> bool:
        """A batch hit its lock or statement timeout and was rolled back: wait, take
        fewer rows, and let the caller retry it. False when the run must stop."""
        tried = self.sizer.size
        self.sizer.timed_out()
        if timeout.kind == "statement":
            self.statement_timeouts += 1
            if self.statement_timeouts > settings.MAINTENANCE_DB_RETRIES:
                # Waiting does not shorten a statement that is too slow for its timeout.
                raise StatementTooSlow(
                    f"{timeout} {self.statement_timeouts} times in a row for batch "
                    f"{self.committed + 1} (last tried with {tried} rows); raise "
                    "MAINTENANCE_STATEMENT_TIMEOUT_MS or lower --batch-size"
                )
            waited = self.statement_timeouts
        else:
            self.lock_timeouts += 1
            waited = self.lock_timeouts
        # The exponent is capped first: 2 ** 1024 does not fit in a float.
        backoff = settings.MAINTENANCE_RETRY_BACKOFF * 2 ** min(waited - 1, 16)
        backoff = min(backoff, MAX_BACKOFF_SECONDS)
        logger.info("run #%s backs off %.1fs: %s", self.run_id, backoff, timeout)
        remembered = {"statement_timeouts": self.statement_timeouts, "size": self.sizer.size}
        remember = {"checkpoint": {**checkpoint, BACKOFF: remembered}}
        return self._throttle(str(timeout), backoff, already_lost=wasted, also=remember)

    def _throttle(
        self, reason: str, seconds: float, already_lost: float = 0.0, also: dict | None = None
    ) -> bool:
        """Wait `seconds` for the database's sake and record it (with `already_lost`, a
        rolled-back batch's time, and `also`, fields to write with the first record), a
        second at a time so the lease stays fresh and a pause or cancel is seen within a
        second; with no wait at all, still look and record once. False when the run must
        stop instead: a stop was asked for, or the worker wants its process back."""
        left = seconds
        while True:
            if why := self.budget.used_up():
                events.note(self.run_record, "gives its worker back", why)
                self.stop(f"interrupted: {why}")
                return False
            step = min(left, THROTTLE_STEP_SECONDS)
            if not self._record_throttle(reason, already_lost + step, **(also or {})):
                self.stop("")  # pausing, cancelling, or the worker wants it back
                return False
            already_lost, also = 0.0, None
            time.sleep(step)
            left -= step
            if left <= 0:
                return True

    def _record_throttle(self, reason: str, seconds: float, **also) -> bool:
        """Add `seconds` of throttling; False when the run is to stop at this boundary."""
        self.throttled = True
        now = timezone.now()
        recorded = with_retries(
            lambda: (
                self._mine()
                .filter(status=Status.RUNNING, stop_requested=False)
                .update(
                    throttled_s=F("throttled_s") + seconds,
                    throttle_reason=reason[:200],
                    throttled_at=now,
                    # Alive while it waits: the lease stays fresh.
                    heartbeat_at=now,
                    **also,
                )
            )
        )
        if not recorded and not self._mine().filter(status__in=ACTIVE).exists():
            raise LeaseLost()
        if recorded:
            self._add_to_run(
                {"throttled_s": seconds}, throttle_reason=reason[:200], throttled_at=now
            )
        return bool(recorded)

    # --- the start: this run's checkpoint, a failed run's, or a fresh one ---

    def _starting_checkpoint(self) -> dict:
        run = self.run_record
        if self.start_attempts:  # a retry: the first attempt may have written some of it
            run.refresh_from_db()
        self.start_attempts += 1
        if run.checkpoint and self._can_resume(run.checkpoint):
            checkpoint = run.checkpoint
            if run.batches:
                events.note(run, "resumes", f"from its checkpoint after batch {run.batches}")
        else:
            fresh = not run.checkpoint and isinstance(run, MaintenanceRun)
            source = self._resumable_run() if fresh else None
            if source is not None:
                checkpoint = {**source.checkpoint}
                events.note(run, "resumes", f"from the checkpoint of failed run #{source.pk}")
            else:
                prepared = self.operation.prepare(run.params, timezone.now())
                checkpoint = {"context": prepared, "position": None, "done": False}
            # Written before the count: a run stopped or failed while counting is under
            # way (a fresh trigger yields to it) and resumable with this context.
            started = {"checkpoint": checkpoint, "heartbeat_at": timezone.now()}
            if isinstance(run, MaintenanceRun):
                started["resumed_from"] = source
            if not self._mine().update(**started):
                raise LeaseLost()
            run.checkpoint = checkpoint
            if isinstance(run, MaintenanceRun):
                run.resumed_from = source
        self.context = self._context(checkpoint)
        remaining = self.operation.count_remaining(self.context, checkpoint["position"])
        total = None if remaining is None else run.processed + remaining
        # The count may have taken a while: this write renews the lease too.
        if not self._mine().update(total=total, heartbeat_at=timezone.now()):
            raise LeaseLost()
        run.total = total
        return checkpoint

    def _context(self, checkpoint: dict) -> RunContext:
        run = self.run_record
        return RunContext(
            run_id=self.run_id,
            params=run.params,
            prepared=checkpoint["context"],
            dry_run=run.dry_run,
            batch_size=run.batch_size,
            bounds=run.bounds if isinstance(run, RunPartition) else None,
        )

    def _resumable_run(self) -> MaintenanceRun | None:
        run = self.run_record
        window = timedelta(hours=settings.MAINTENANCE_RESUME_WINDOW_HOURS)
        previous = (
            MaintenanceRun.objects.filter(
                operation=run.operation,
                status=Status.FAILED,
                dry_run=run.dry_run,
                created_at__gte=timezone.now() - window,
                created_at__lt=run.created_at,
            )
            .exclude(pk=run.pk)
            .order_by("-created_at", "-pk")
            .first()
        )
        if previous is None or previous.params != run.params or previous.is_partitioned:
            return None
        if not previous.checkpoint or previous.checkpoint.get("done"):
            return None
        if not self._can_resume(previous.checkpoint):
            return None
        finished_since = MaintenanceRun.objects.filter(
            operation=run.operation,
            status=Status.SUCCEEDED,
            created_at__gt=previous.created_at,
        ).exists()
        return None if finished_since else previous

    def _can_resume(self, checkpoint: dict) -> bool:
        """The operation's say on reusing `checkpoint` (e.g. the file is still the same)."""
        return self.operation.can_resume(self.run_record.params, checkpoint.get("context", {}))

    # --- one batch ---

    def _commit_batch(self, number: int, checkpoint: dict, size: int):
        """Run and commit one batch. Returns (checkpoint, report, keep going); raises
        BatchTimedOut when one of its timeouts rolled it back."""
        try:
            return self._try_batch(number, checkpoint, size)
        except OperationalError as error:
            timeout = timeouts.as_timeout(error)
            if timeout is None:
                raise
            raise timeout from error

    def _try_batch(self, number: int, checkpoint: dict, size: int):
        run = self.run_record
        started = time.perf_counter()
        # A Ctrl-C during the COMMIT waits for it: the batch is then whole, either way.
        with atomic_whole_commit():
            timeouts.limit_this_transaction()
            result = self.operation.run_batch(self.context, checkpoint["position"], size)
            new_checkpoint = {
                **{key: value for key, value in checkpoint.items() if key != BACKOFF},
                "position": result.position,
                "done": result.done,
            }
            now = timezone.now()
            self._record_findings(result, now)
            seconds = time.perf_counter() - started
            logged = None
            if result.processed:
                logged = RunBatch.objects.create(
                    run_id=self.run_id,
                    partition=self.partition_number,
                    number=number,
                    position=result.position,
                    processed=result.processed,
                    changed=result.changed,
                    findings=len(result.findings),
                    changed_ids=result.changed_ids,
                    written=result.written,
                    seconds=seconds,
                    size=size,
                    committed_at=now,
                )
            progress = {
                "processed": F("processed") + result.processed,
                "changed": F("changed") + result.changed,
                "findings": F("findings") + len(result.findings),
                "batches": F("batches") + (1 if logged else 0),
                "work_seconds": F("work_seconds") + seconds,
                "checkpoint": new_checkpoint,
                "heartbeat_at": now,
                "idle_attempts": 0,
            }
            keep_going = True
            # The usual case in one UPDATE: still ours, still running, nobody asked to stop.
            if (
                not self._mine()
                .filter(status=Status.RUNNING, stop_requested=False)
                .update(**progress)
            ):
                if not self._mine().filter(status__in=ACTIVE).update(**progress):
                    raise LeaseLost()
                keep_going = False  # pausing, cancelling, or the worker wants it back
            self._add_to_run(
                {
                    "processed": result.processed,
                    "changed": result.changed,
                    "findings": len(result.findings),
                    "batches": 1 if logged else 0,
                    "work_seconds": seconds,
                }
            )
            if result.done:
                # The last batch and the run's success commit together: one commit less.
                self._succeed()
        report = BatchReport.of(run, logged) if logged else None
        return new_checkpoint, report, keep_going

    def _record_findings(self, result: BatchResult, now) -> None:
        if not result.findings:
            return
        Finding.objects.bulk_create(
            [
                Finding(
                    run_id=self.run_id,
                    rule=f.rule,
                    model=f.model,
                    object_id=f.object_id,
                    message=f.message,
                    fixed=f.fixed,
                    before=f.before,
                    after=f.after,
                    also_written=f.also_written,
                    created_at=now,
                    fingerprint=Finding.fingerprint_of(f.rule, f.model, f.object_id),
                    # Until the run ends and finds it in the run before (findings_over_time).
                    first_seen_at=now,
                )
                for f in result.findings
            ]
        )

    # --- ends other than success ---

    def stop(self, note: str) -> None:
        """Stop at this batch boundary: paused, cancelled, or interrupted (re-queued)."""
        if self.throttled:
            # It only waited for the database, in control to the end: not an attempt
            # that died (a runner that dies after throttling still counts as one).
            with_retries(lambda: self._mine().update(idle_attempts=0))
        with_retries(lambda: self._mine().stop(self.token, note))

    def pause_now(self) -> None:
        """Ctrl-C: the operator stopped an inline run; keep it, resumable, as paused."""

        def record():
            # The signal may land between a batch's commit and self.committed.
            committed = self._mine().values_list("batches", flat=True).first()
            self._mine().pause()
            self._mine().stop(
                self.token,
                f"paused by Ctrl-C; data is as of batch {committed}; "
                f"resume with: manage.py maintenance_run resume {self.run_id}",
            )

        try:
            with_retries(record)
        except (OperationalError, InterfaceError):
            logger.exception("could not record the pause of run #%s", self.run_record.pk)

    def fail(self, message: str) -> None:
        try:
            with_retries(lambda: self._mine().fail(message, token=self.token))
        except (OperationalError, InterfaceError):
            logger.exception("could not record the failure of run #%s", self.run_record.pk)
