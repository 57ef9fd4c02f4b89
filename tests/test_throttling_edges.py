"""The edges of throttling, found by an adversarial review: timeouts across slices, the
crash-loop guard after a throttle, no backoff at all, a thousand lock timeouts, Ctrl-C
and pg_cancel_backend during a lock wait, a run stopped while counting, runs recorded
before adaptive sizes. Each test names the promise it holds the engine to; the
PostgreSQL ones use real extra sessions."""

import os
import signal
import threading
import time

import pytest
from django.db import OperationalError, connection

from chronicles.models import Scene
from maintenance import operations
from maintenance.engine import control
from maintenance.engine.runner import Budget, execute
from maintenance.models import MaintenanceRun, RunBatch
from tests.test_throttling import archive_run, old_scenes, session, unarchived

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status


def in_thread(action):
    """`action` in a daemon thread that closes its own database connection."""
    outcome = {}

    def target():
        try:
            outcome["value"] = action()
        except BaseException as error:  # reported by the test
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def requeue(run):
    MaintenanceRun.objects.filter(pk=run.pk).requeue()


def hold_row(row_id, seconds, holding, release=None):
    """Another session holds `row_id` of chronicles_scene locked for `seconds` (or until
    `release` is set)."""

    def hold():
        with session() as holder, holder.transaction():
            holder.execute("SELECT id FROM chronicles_scene WHERE id = %s FOR UPDATE", [row_id])
            holding.set()
            if release is None:
                time.sleep(seconds)
            else:
                release.wait(seconds)

    return in_thread(hold)


# --- statement timeouts must not loop forever, whatever the slice --------------------


@pytest.mark.django_db(transaction=True)
def test_statement_timeouts_fail_the_run_even_when_its_slices_end_between_them(
    postgresql, fast_backoff, monkeypatch
):
    """README: 'a batch that hits the statement timeout MAINTENANCE_DB_RETRIES + 1 times
    in a row fails the run'. On a worker, the slice may end during the backoff: the next
    slice's runner starts counting from 0 again, and the throttle resets idle_attempts,
    so neither this count nor MAINTENANCE_MAX_ATTEMPTS ever stops the run. (Real case:
    MAINTENANCE_STATEMENT_TIMEOUT_MS=60000, the default 5 retries and 300 s slices.)"""
    fast_backoff.MAINTENANCE_STATEMENT_TIMEOUT_MS = 100
    fast_backoff.MAINTENANCE_DB_RETRIES = 2
    fast_backoff.MAINTENANCE_MAX_ATTEMPTS = 3
    old_scenes(20)
    archive = operations.get("archive_old_scenes")

    def always_slow(ctx, batch):
        connection.cursor().execute("SELECT pg_sleep(1)")

    monkeypatch.setattr(archive, "process", always_slow)
    run = archive_run(batch_size=10)
    for _ in range(8):  # the worker takes the re-queued run again and again
        run = execute(run, budget=Budget(slice_seconds=0.25, requeue=requeue))
        if run.status != Status.QUEUED:
            break

    assert run.status == Status.FAILED, (run.status, run.attempts, run.throttle_reason)
    assert "times in a row" in run.error
    assert unarchived() == 20


@pytest.mark.django_db(transaction=True)
def test_an_adaptive_run_keeps_shrinking_across_slices_until_its_batch_fits(
    postgresql, fast_backoff, monkeypatch
):
    """'A batch that hits the statement timeout is retried smaller': the next slice
    starts again at the size of the last *committed* batch (here: none, so 1,000), so
    a run whose batches need more halvings than fit in one slice never commits one."""
    fast_backoff.MAINTENANCE_STATEMENT_TIMEOUT_MS = 100
    fast_backoff.MAINTENANCE_DB_RETRIES = 5
    old_scenes(300)
    archive = operations.get("archive_old_scenes")
    process = archive.process

    def slow_when_big(ctx, batch):  # more than 200 rows outlast the statement timeout
        if len(batch.items) > 200:
            connection.cursor().execute("SELECT pg_sleep(1)")
        return process(ctx, batch)

    monkeypatch.setattr(archive, "process", slow_when_big)
    run = archive_run()
    for _ in range(8):
        run = execute(run, budget=Budget(slice_seconds=0.25, requeue=requeue))
        if run.status != Status.QUEUED:
            break

    sizes = list(RunBatch.objects.filter(run=run).values_list("size", flat=True))
    assert run.status == Status.SUCCEEDED, (run.status, run.attempts, sizes)
    assert unarchived() == 0


# --- the statement-timeout count counts statement timeouts ----------------------------


@pytest.mark.django_db(transaction=True)
def test_lock_timeouts_then_one_statement_timeout_do_not_fail_the_run(
    postgresql, fast_backoff, monkeypatch
):
    """README: lock timeouts 'are retried for as long as it takes'; only a statement
    timeout 'MAINTENANCE_DB_RETRIES + 1 times in a row' fails the run. timeouts_in_a_row
    counts both kinds, so a few lock timeouts followed by one statement timeout (a DBA's
    pg_cancel_backend, a slow moment) fail the run, saying 'N times in a row'."""
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = 100
    fast_backoff.MAINTENANCE_STATEMENT_TIMEOUT_MS = 300
    fast_backoff.MAINTENANCE_DB_RETRIES = 2
    old_scenes(20)
    busy = Scene.objects.create(name="in use by the application")  # not a candidate
    archive = operations.get("archive_old_scenes")
    process = archive.process
    calls = []

    def meets_locks_then_a_slow_moment(ctx, batch):
        calls.append(len(batch.items))
        cursor = connection.cursor()
        if len(calls) <= 3:  # a row the application holds: a real lock timeout
            cursor.execute("SELECT id FROM chronicles_scene WHERE id = %s FOR UPDATE", [busy.pk])
        elif len(calls) == 4:  # once: a real statement timeout
            cursor.execute("SELECT pg_sleep(1)")
        return process(ctx, batch)

    monkeypatch.setattr(archive, "process", meets_locks_then_a_slow_moment)
    holding = threading.Event()
    holder, _ = hold_row(busy.pk, 3, holding)
    assert holding.wait(10)
    try:
        run = execute(archive_run(batch_size=50))
    finally:
        holder.join(10)

    assert len(calls) >= 4
    assert run.status == Status.SUCCEEDED, run.error
    assert Scene.objects.filter(archived_at__isnull=False).count() == 20


# --- pause, cancel and slices are honoured while backing off --------------------------


@pytest.mark.django_db(transaction=True)
def test_with_no_backoff_a_run_stuck_behind_a_lock_still_pauses(postgresql, fast_backoff):
    """MAINTENANCE_RETRY_BACKOFF=0 is a valid setting. _throttle(reason, 0) then neither
    records nor looks at the run row, the budget or the stop flag, and the loop's own
    budget check is skipped until a batch commits: the run retries the locked batch
    until the lock goes, ignoring the operator's pause (and slices, worker shutdown),
    and none of the wasted time is recorded as throttled."""
    fast_backoff.MAINTENANCE_RETRY_BACKOFF = 0
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = 100
    ids = old_scenes(50)
    holding = threading.Event()
    holder, _ = hold_row(ids[25], 4, holding)
    assert holding.wait(10)
    run = archive_run()
    thread, outcome = in_thread(lambda: execute(run))
    try:
        time.sleep(0.5)
        control.pause(MaintenanceRun.objects.get(pk=run.pk))
        thread.join(2)
        stopped_in_time = not thread.is_alive()
    finally:
        holder.join(10)
        thread.join(10)

    ended = outcome["value"]
    assert stopped_in_time, "the pause was not seen within 1.5 s of backing off"
    assert ended.status == Status.PAUSED, ended.status
    assert ended.throttled_s > 0 and "lock_timeout" in ended.throttle_reason
    assert unarchived() == 50


# --- resume: checkpoint and resumed_from survive a failed start ------------------------


def test_a_run_that_fails_while_counting_is_still_resumed_by_the_next_trigger(
    settings, monkeypatch
):
    """DESIGN: a failed run's checkpoint is resumed by the next trigger with the same
    parameters. The start now writes checkpoint and resumed_from only after the count:
    a run that resumed a failed one and then failed while counting (the database gone
    longer than the retries) leaves no checkpoint, so the next trigger starts from
    scratch (a new cutoff, everything walked again) instead of resuming, although the
    failure says 'the next trigger with the same parameters resumes from there'."""
    settings.MAINTENANCE_DB_RETRIES = 0
    old_scenes(20)

    def stop_after_two(report):
        if report.number == 2:
            raise RuntimeError("stopped after batch 2")

    first = execute(archive_run(batch_size=5), on_batch=stop_after_two)
    assert first.status == Status.FAILED and first.checkpoint["position"] is not None

    archive = operations.get("archive_old_scenes")
    count = archive.count_remaining

    def database_gone(ctx, position):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(archive, "count_remaining", database_gone)
    second = execute(archive_run(batch_size=5))
    assert second.status == Status.FAILED
    assert "resumes from there" in second.error
    monkeypatch.setattr(archive, "count_remaining", count)

    third = execute(archive_run(batch_size=5))

    assert third.status == Status.SUCCEEDED
    assert third.resumed_from_id in (first.pk, second.pk), "started from scratch"
    assert third.checkpoint["context"] == first.checkpoint["context"]  # the same cutoff
    assert third.processed == 10


def test_a_run_paused_while_counting_still_holds_off_a_fresh_trigger(monkeypatch):
    """claim(): 'A fresh trigger also yields to a run of its operation that is between
    slices, paused or waiting' -- recognised by its checkpoint. A Ctrl-C (or the soft
    time limit) during the start's count now leaves the run paused (interrupted)
    without a checkpoint, so the next fresh trigger runs the whole operation, and the
    paused run, once resumed, does it all again."""
    old_scenes(20)
    archive = operations.get("archive_old_scenes")
    count = archive.count_remaining

    def ctrl_c(ctx, position):
        raise KeyboardInterrupt

    monkeypatch.setattr(archive, "count_remaining", ctrl_c)
    first = archive_run()
    with pytest.raises(KeyboardInterrupt):
        execute(first)
    first.refresh_from_db()
    assert first.status == Status.PAUSED
    monkeypatch.setattr(archive, "count_remaining", count)

    second = execute(archive_run())

    assert second.status == Status.SKIPPED, second.status
    assert second.skipped_because_of_id == first.pk


# --- the application never waits behind a stuck batch longer than the lock timeout ----


# --- runs recorded before migration 0005 ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_run_recorded_before_0005_without_batch_size_adapts_after_the_upgrade():
    """Before 0005 every run stored batch_size 1000 (the default) whether or not anyone
    passed --batch-size; 0005 keeps that value, so a run paused or interrupted across the
    deploy (and every admin 'Re-run' of an old run, which copies batch_size) is pinned at
    1,000 rows: no adaptation, no shrinking on statement timeouts (it fails telling the
    operator to lower a --batch-size nobody gave), and the admin shows '1,000 rows
    (pinned)'."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("maintenance", "0004_run_states")])
    try:
        old = executor.loader.project_state([("maintenance", "0004_run_states")]).apps
        runs = old.get_model("maintenance", "MaintenanceRun")
        run = runs.objects.create(operation="archive_old_scenes", trigger="beat", params={})
        assert run.batch_size == 1000  # what every run of the old schema stored
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert MaintenanceRun.objects.get(pk=run.pk).batch_size is None


# --- promises that held (kept: nothing else tests them) ------------------------------


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_during_a_lock_wait_pauses_the_run_at_once(postgresql, fast_backoff):
    """A real SIGINT while the batch waits on the application's row lock: psycopg
    cancels the statement and re-raises KeyboardInterrupt (not QueryCanceled, which
    would be taken for a statement timeout and retried); the run is paused, nothing of
    the batch is kept, and the lock is not held on to."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = 5000
    ids = old_scenes(50)
    holding = threading.Event()
    holder, _ = hold_row(ids[25], 2, holding)
    assert holding.wait(10)
    run = archive_run()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    began = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(run)
        took = time.monotonic() - began
    finally:
        timer.cancel()
        holder.join(10)

    run.refresh_from_db()
    assert took < 1.5
    assert run.status == Status.PAUSED and "paused by Ctrl-C" in run.error
    assert run.throttled_s == 0  # a Ctrl-C is not a timeout
    assert unarchived() == 50
    resumed = execute(control.resume(run, send=None))
    assert resumed.status == Status.SUCCEEDED and unarchived() == 0


@pytest.mark.django_db(transaction=True)
def test_a_batch_cancelled_by_hand_is_retried_and_a_lock_on_the_run_row_frees_the_application(
    postgresql, fast_backoff
):
    """pg_cancel_backend of a batch waiting on a lock: rolled back, backed off, retried
    (recorded as throttled). Then another session holds the run's own row: the batch
    holding its data rows times out on it, so writers to those rows wait at most the
    lock timeout."""
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = 300
    ids = old_scenes(300)
    run = archive_run(batch_size=100)
    run_row_held, stop_writing = threading.Event(), threading.Event()
    waits = []

    def hold_the_run_row(report):
        if report.number != 1:
            return

        def hold():
            with session() as other, other.transaction():
                other.execute(
                    "SELECT id FROM maintenance_maintenancerun WHERE id = %s FOR UPDATE", [run.pk]
                )
                run_row_held.set()
                time.sleep(1.5)

        in_thread(hold)
        assert run_row_held.wait(10)

    def write():
        with session() as other:
            n = 0
            while not stop_writing.is_set():
                began = time.monotonic()
                other.execute(
                    "UPDATE chronicles_scene SET name = 'edited' WHERE id = %s",
                    [ids[100 + n % 100]],
                )
                waits.append(time.monotonic() - began)
                n += 1
                time.sleep(0.01)

    writer, _ = in_thread(write)
    try:
        ended = execute(run, on_batch=hold_the_run_row)
    finally:
        stop_writing.set()
        writer.join(10)

    assert ended.status == Status.SUCCEEDED, ended.error
    assert unarchived() == 0
    assert ended.throttled_s > 0 and "lock_timeout (300 ms)" in ended.throttle_reason
    assert max(waits) < 0.3 + 0.5

    # pg_cancel_backend of a batch stuck behind the application's lock
    Scene.objects.update(archived_at=None)
    holding = threading.Event()
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = 5000
    holder, _ = hold_row(ids[50], 1.5, holding)
    assert holding.wait(10)

    def cancel_the_batch():
        with session() as dba:
            for _ in range(100):
                cancelled = dba.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database() "
                    "AND query LIKE 'UPDATE%%chronicles_scene%%archived_at%%'"
                ).fetchall()
                if cancelled:
                    return True
                time.sleep(0.05)

    canceller, cancel = in_thread(cancel_the_batch)
    try:
        again = execute(archive_run(batch_size=100, older_than_days=100))
    finally:
        canceller.join(10)
        holder.join(10)
    assert cancel.get("value")
    assert again.status == Status.SUCCEEDED, again.error
    assert "statement was cancelled" in again.throttle_reason
    assert unarchived() == 0


# --- the crash-loop guard (MAINTENANCE_MAX_ATTEMPTS) ------------------------------------


class Killed(BaseException):
    """The worker process dies in the middle of a batch (OOM killer, SIGKILL): nothing
    after this point runs, the run stays running with its lease."""


@pytest.mark.django_db(transaction=True)
def test_a_run_that_keeps_killing_its_worker_is_given_up_even_if_it_throttled_first(
    postgresql, fast_backoff, monkeypatch
):
    """DESIGN: 'After MAINTENANCE_MAX_ATTEMPTS resumptions without progress it fails';
    leases._reclaim: 'a run that keeps dying (a batch that kills its worker) stops being
    taken over'. _record_throttle sets idle_attempts=0, so a run that throttles once
    (one lock timeout, one busy second of lock waiters) before its batch kills the
    worker is taken over again and again, forever."""
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = 100
    fast_backoff.MAINTENANCE_LEASE_SECONDS = 1
    fast_backoff.MAINTENANCE_MAX_ATTEMPTS = 3
    old_scenes(20)
    busy = Scene.objects.create(name="in use by the application")  # not a candidate
    archive = operations.get("archive_old_scenes")
    calls = []

    def meets_a_lock_then_kills_the_worker(ctx, batch):
        calls.append(1)
        if len(calls) % 2:  # each attempt's first try: a real lock timeout
            connection.cursor().execute(
                "SELECT id FROM chronicles_scene WHERE id = %s FOR UPDATE", [busy.pk]
            )
        raise Killed

    monkeypatch.setattr(archive, "process", meets_a_lock_then_kills_the_worker)
    holding, release = threading.Event(), threading.Event()
    holder, _ = hold_row(busy.pk, 30, holding, release)
    assert holding.wait(10)
    run = archive_run(batch_size=10)
    try:
        for _ in range(6):  # redelivered after each crash (acks_late) once the lease is out
            with pytest.raises(Killed):
                execute(run)
            connection.close()  # the dead process's connection is gone
            MaintenanceRun.objects.filter(pk=run.pk).update(
                heartbeat_at=run.created_at  # long past the 1 s lease
            )
            run.refresh_from_db()
            if run.status != Status.RUNNING:
                break
    except pytest.fail.Exception:
        pass  # execute() no longer ran the batch: the guard worked
    finally:
        release.set()
        holder.join(10)

    run.refresh_from_db()
    assert run.attempts <= 4, f"taken over {run.attempts} times; idle_attempts {run.idle_attempts}"
    assert run.status == Status.FAILED and "without progress" in run.error
    assert not Scene.objects.filter(archived_at__isnull=False).exists()


# --- lock timeouts are retried for as long as it takes --------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_thousand_lock_timeouts_in_a_row_are_still_retried(postgresql, fast_backoff, monkeypatch):
    """README: 'Lock timeouts are retried for as long as it takes'. _back_off computes
    MAINTENANCE_RETRY_BACKOFF * 2 ** (timeouts_in_a_row - 1) before capping it: at the
    1,025th lock timeout in a row the int no longer converts to a float and the run
    fails with 'OverflowError: int too large to convert to float'. At the defaults
    (2 s lock timeout + 5 s backoff) that is an inline run stuck about two hours behind
    an idle-in-transaction session; with a zero backoff and a 1 ms lock timeout, seconds."""
    fast_backoff.MAINTENANCE_RETRY_BACKOFF = 0.0
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = 1
    ids = old_scenes(20)
    archive = operations.get("archive_old_scenes")
    run_batch, tries = archive.run_batch, []

    def counted(ctx, position, size=None):
        tries.append(1)
        return run_batch(ctx, position, size)

    monkeypatch.setattr(archive, "run_batch", counted)
    holding, release = threading.Event(), threading.Event()
    holder, _ = hold_row(ids[10], 60, holding, release)
    assert holding.wait(10)
    run = archive_run()
    thread, outcome = in_thread(lambda: execute(run))
    try:
        deadline = time.monotonic() + 30
        while thread.is_alive() and len(tries) < 1_100 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        release.set()
        holder.join(10)
        thread.join(20)

    ended = outcome.get("value")
    assert ended is not None, outcome.get("error")
    assert ended.status == Status.SUCCEEDED, ended.error
    assert unarchived() == 0
