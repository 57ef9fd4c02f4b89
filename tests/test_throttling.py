"""Gentle on a live database: lock and statement timeouts per batch, health throttling,
adaptive batch sizes. The PostgreSQL tests use real extra sessions (row locks held by a
second connection, writes from a third, sessions really waiting on locks). The lag
tests here fake only the replication-lag query's answer, to steer it in time;
tests/integration/test_replica_lag.py measures lag on a real streaming replica."""

import threading
import time
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronicles.models import Scene
from maintenance import operations
from maintenance.engine import batch_size, control, health
from maintenance.engine.batch_size import BatchSizer
from maintenance.engine.runner import Budget, execute
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun, RunBatch
from maintenance.reporting import run_progress_line, run_summary
from tests.factories import days_ago
from tests.services import database_url_for_subprocess

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
    database=None,
)


def old_scenes(count):
    """`count` finished scenes, inactive for 200 days: all of them due for archiving."""
    Scene.objects.bulk_create(
        [Scene(name=f"old{i}", finished=True, created_at=days_ago(200)) for i in range(count)]
    )
    return list(Scene.objects.order_by("id").values_list("id", flat=True))


def archive_run(**raw):
    return create_run("archive_old_scenes", raw, trigger=MaintenanceRun.Trigger.CLI)


def unarchived():
    return Scene.objects.filter(archived_at__isnull=True).count()


@contextmanager
def session():
    """Another real connection to the test database, in autocommit."""
    with psycopg.connect(database_url_for_subprocess(), autocommit=True) as other:
        yield other


def in_thread(action):
    outcome = {}

    def target():
        try:
            outcome["value"] = action()
        except BaseException as error:  # reported by the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# --- adaptive batch sizes ------------------------------------------------------------


@HYPOTHESIS
@given(
    start=st.one_of(st.none(), st.integers(-5, 50_000)),
    target_ms=st.integers(10, 600_000),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("batch"), st.floats(0, 1e6), st.integers(-3, 10**6)),
            st.tuples(st.just("timeout"), st.just(0.0), st.just(0)),
        ),
        max_size=60,
    ),
)
def test_an_adaptive_size_stays_within_bounds_grows_at_most_twofold_and_never_past_the_ceiling(
    start, target_ms, steps
):
    sizer = BatchSizer(None, target_ms, start)
    assert batch_size.MIN <= sizer.size <= batch_size.MAX
    for kind, seconds, processed in steps:
        before = sizer.size
        if kind == "batch":
            sizer.observe(seconds, processed)
        else:
            sizer.timed_out()
        assert batch_size.MIN <= sizer.size <= batch_size.MAX
        assert before / 4 - 1 <= sizer.size <= before * 2 + 1
        if kind == "timeout":
            assert sizer.size <= before
        elif seconds > target_ms / 1000:
            assert sizer.size <= before  # over the ceiling: never grows
        elif seconds >= target_ms / 2000:
            assert sizer.size == before  # between half and the whole: stays


@HYPOTHESIS
@given(
    pinned=st.integers(1, 10_000),
    steps=st.lists(st.tuples(st.floats(0, 1e6), st.integers(0, 10**6)), max_size=30),
)
def test_a_pinned_size_never_moves(pinned, steps):
    sizer = BatchSizer(pinned, 250)
    for seconds, processed in steps:
        sizer.observe(seconds, processed)
        sizer.timed_out()
    assert sizer.size == pinned


def test_slow_batches_shrink_towards_the_target_and_the_log_records_each_size(
    settings, monkeypatch
):
    settings.MAINTENANCE_TARGET_BATCH_MS = 20
    old_scenes(2_500)
    archive = operations.get("archive_old_scenes")
    process = archive.process

    def slow(ctx, batch):  # a batch costs 0.1 ms a row: 1,000 rows are 5x the target
        time.sleep(len(batch.items) / 10_000)
        return process(ctx, batch)

    monkeypatch.setattr(archive, "process", slow)

    run = execute(archive_run())

    assert run.status == Status.SUCCEEDED
    assert unarchived() == 0
    sizes = list(RunBatch.objects.filter(run=run).order_by("number").values_list("size", flat=True))
    assert sizes[0] == batch_size.START
    assert sizes[1] == batch_size.START // 4  # a quarter at most, however slow
    # 20 ms at 0.1 ms a row is 200 rows, a ceiling: it settles at or below, never
    # under MIN.
    assert all(batch_size.MIN <= size <= 200 for size in sizes[2:])
    assert run.batch_size is None


def test_fast_batches_grow_and_a_resumed_run_goes_on_at_its_pace(settings):
    settings.MAINTENANCE_TARGET_BATCH_MS = 600_000  # every batch is far below the target
    old_scenes(3_500)

    def ctrl_c_after_two(report):
        if report.number == 2:
            raise KeyboardInterrupt

    run = archive_run()
    with pytest.raises(KeyboardInterrupt):
        execute(run, on_batch=ctrl_c_after_two)
    run = execute(control.resume(MaintenanceRun.objects.get(pk=run.pk), send=None))

    assert run.status == Status.SUCCEEDED
    sizes = list(RunBatch.objects.filter(run=run).order_by("number").values_list("size", flat=True))
    # Doubling while fast; the resumed run starts at its last size, not from scratch.
    assert sizes == [1_000, 2_000, 2_000]
    assert unarchived() == 0


def test_batch_size_pins_every_batch():
    old_scenes(50)
    run = execute(archive_run(batch_size=7))
    sizes = set(RunBatch.objects.filter(run=run).values_list("size", flat=True))
    assert sizes == {7}
    assert run.batch_size == 7


# --- lock and statement timeouts (PostgreSQL, real sessions) --------------------------


@pytest.mark.django_db(transaction=True)
def test_a_held_row_lock_never_makes_the_application_wait_past_the_lock_timeout(
    postgresql, fast_backoff
):
    """A second session holds a row of the batch for 3 s; a third keeps writing other
    rows of the same range. The writes wait at most the lock timeout (+0.5 s), and the
    run archives everything once the lock is gone."""
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = 400
    ids = old_scenes(600)
    locked, written = ids[450], ids[10:400:7]
    holding, stop_writing = threading.Event(), threading.Event()
    waits = []

    def hold():
        with session() as holder, holder.transaction():
            holder.execute("SELECT id FROM chronicles_scene WHERE id = %s FOR UPDATE", [locked])
            holding.set()
            time.sleep(3)

    def write():
        with session() as writer:
            n = 0
            while not stop_writing.is_set():
                started = time.monotonic()
                writer.execute(
                    "UPDATE chronicles_scene SET name = %s WHERE id = %s",
                    [f"edited {n}", written[n % len(written)]],
                )
                waits.append(time.monotonic() - started)
                n += 1
                time.sleep(0.01)

    holder, _ = in_thread(hold)
    assert holding.wait(10)
    writer, _ = in_thread(write)
    try:
        run = execute(archive_run(batch_size=1000))
    finally:
        stop_writing.set()
        writer.join(10)
        holder.join(10)

    assert run.status == Status.SUCCEEDED, run.error
    assert unarchived() == 0
    assert len(waits) > 20
    assert max(waits) < 0.4 + 0.5
    assert run.throttled_s > 0
    assert "lock_timeout (400 ms)" in run.throttle_reason
    assert RunBatch.objects.filter(run=run).count() == run.batches >= 1


@pytest.mark.django_db(transaction=True)
def test_statement_timeouts_shrink_an_adaptive_batch_until_it_fits(
    postgresql, fast_backoff, monkeypatch
):
    fast_backoff.MAINTENANCE_STATEMENT_TIMEOUT_MS = 200
    old_scenes(450)
    archive = operations.get("archive_old_scenes")
    process = archive.process

    def slow_when_big(ctx, batch):  # more than 300 rows outlast the statement timeout
        if len(batch.items) > 300:
            connection.cursor().execute("SELECT pg_sleep(1)")
        return process(ctx, batch)

    monkeypatch.setattr(archive, "process", slow_when_big)
    run = execute(archive_run())

    assert run.status == Status.SUCCEEDED, run.error
    assert unarchived() == 0
    batches = RunBatch.objects.filter(run=run).order_by("number")
    assert batches[0].size == 250  # 1,000 and 500 timed out and were rolled back
    assert all(batch.processed <= 300 for batch in batches)
    assert "(statement_timeout 200 ms)" in run.throttle_reason
    assert run.throttled_s > 0


@pytest.mark.django_db(transaction=True)
def test_a_pinned_batch_that_always_times_out_fails_saying_what_to_change(
    postgresql, fast_backoff, monkeypatch
):
    fast_backoff.MAINTENANCE_STATEMENT_TIMEOUT_MS = 100
    fast_backoff.MAINTENANCE_DB_RETRIES = 2
    old_scenes(20)
    archive = operations.get("archive_old_scenes")

    def always_slow(ctx, batch):
        connection.cursor().execute("SELECT pg_sleep(1)")

    monkeypatch.setattr(archive, "process", always_slow)
    run = execute(archive_run(batch_size=10))

    assert run.status == Status.FAILED
    assert "(statement_timeout 100 ms) 3 times in a row" in run.error
    assert "MAINTENANCE_STATEMENT_TIMEOUT_MS" in run.error
    assert unarchived() == 20  # nothing half-done


# --- health throttling ----------------------------------------------------------------


@contextmanager
def waiting_sessions(count):
    """`count` sessions really waiting on a lock (an advisory lock a holder keeps)."""
    key = 4_242_013
    with session() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [key])
        waiters = [
            psycopg.connect(database_url_for_subprocess(), autocommit=True) for _ in range(count)
        ]
        threads = [
            in_thread(lambda w=w: w.execute("SELECT pg_advisory_lock(%s)", [key])) for w in waiters
        ]
        try:
            deadline = time.monotonic() + 10
            while health.read().lock_waiters < count and time.monotonic() < deadline:
                time.sleep(0.05)
            yield holder
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", [key])
            for waiter in waiters:
                waiter.cancel()
            for thread, _ in threads:
                thread.join(10)
            for waiter in waiters:
                waiter.close()


@pytest.mark.django_db(transaction=True)
def test_sessions_waiting_on_locks_throttle_a_run_until_they_are_gone(postgresql, fast_backoff):
    fast_backoff.MAINTENANCE_MAX_LOCK_WAITERS = 1
    old_scenes(30)
    with waiting_sessions(2):
        assert health.read().lock_waiters >= 2
        thread, outcome = in_thread(lambda: execute(archive_run()))
        time.sleep(2.5)
        during = MaintenanceRun.objects.get()
        assert during.status == Status.RUNNING
        assert during.processed == 0  # no batch while the database is busy
        assert "sessions waiting on locks > 1" in during.throttle_reason
        assert "throttled" in run_progress_line(during)
    thread.join(20)
    run = outcome["value"]

    assert run.status == Status.SUCCEEDED
    assert unarchived() == 0
    assert run.throttled_s >= 2
    summary = run_summary(run)
    assert summary["throttled_s"] == round(run.throttled_s, 1)
    assert "sessions waiting on locks" in summary["throttle_reason"]


@pytest.fixture
def replica_lagging(monkeypatch):
    """The replication-lag query answers 45 s until `lagging["until"]` (a clock time),
    then 0: the reading, its cache and the runner's response are the real ones."""
    lagging = {"until": time.time() + 2.5}

    def install():
        monkeypatch.setattr(
            health,
            "REPLICATION_LAG_SQL",
            "SELECT CASE WHEN extract(epoch FROM clock_timestamp()) < "
            f"{lagging['until']} THEN 45.0 ELSE 0.0 END",
        )

    lagging["install"] = install
    install()
    return lagging


@pytest.mark.django_db(transaction=True)
def test_replication_lag_throttles_a_run_and_records_the_time_and_reason(
    postgresql, fast_backoff, replica_lagging
):
    old_scenes(30)
    run = execute(archive_run())

    assert run.status == Status.SUCCEEDED
    assert unarchived() == 0
    assert run.throttle_reason == "replication lag 45.0s > 30s"
    assert 1.5 <= run.throttled_s <= 6


@pytest.mark.django_db(transaction=True)
def test_a_throttled_run_still_pauses_and_gives_its_worker_back(
    postgresql, fast_backoff, replica_lagging
):
    replica_lagging["until"] = time.time() + 3600
    replica_lagging["install"]()
    old_scenes(30)

    run = archive_run()
    thread, outcome = in_thread(lambda: execute(run))
    time.sleep(1.5)
    control.pause(MaintenanceRun.objects.get(pk=run.pk))
    thread.join(10)
    assert not thread.is_alive()
    assert outcome["value"].status == Status.PAUSED
    assert outcome["value"].throttled_s > 0

    # A worker's slice ends while the run is throttled: interrupted, not stuck.
    resumed = control.resume(MaintenanceRun.objects.get(pk=run.pk), send=None)
    started = time.monotonic()
    ended = execute(resumed, budget=Budget(slice_seconds=1))
    assert ended.status == Status.INTERRUPTED
    assert time.monotonic() - started < 5
    assert unarchived() == 30


def test_sqlite_and_healthy_databases_are_never_throttled(settings):
    health.forget()
    old_scenes(20)
    run = execute(archive_run())
    assert run.status == Status.SUCCEEDED
    assert run.throttled_s == 0
    assert run.throttle_reason == ""
    assert run_summary(run)["throttle_reason"] is None


# --- the promises, against generated shapes -------------------------------------------


@HYPOTHESIS
@given(
    lag=st.floats(0, 1e6, allow_nan=False),
    waiters=st.integers(0, 10**6),
    max_lag=st.floats(0, 86_400, allow_nan=False),
    max_waiters=st.integers(0, 100_000),
)
def test_a_reading_throttles_exactly_when_a_signal_is_over_its_limit(
    settings, lag, waiters, max_lag, max_waiters
):
    settings.MAINTENANCE_MAX_REPLICATION_LAG_S = max_lag
    settings.MAINTENANCE_MAX_LOCK_WAITERS = max_waiters
    reason = health.Reading(lag, waiters).reason()
    assert bool(reason) == (lag > max_lag or waiters > max_waiters)
    assert "\n" not in reason and len(reason) < 200
    if lag > max_lag:
        assert reason.startswith("replication lag")
    elif waiters > max_waiters:
        assert reason.startswith(f"{waiters} sessions waiting on locks")


@pytest.mark.django_db(transaction=True)
@settings(HYPOTHESIS, max_examples=5)
@given(
    scenes=st.integers(50, 400),
    locked=st.lists(st.floats(0, 0.999), min_size=1, max_size=3),
    hold_s=st.floats(0.3, 1.5),
    lock_timeout_ms=st.integers(100, 400),
    pinned=st.one_of(st.none(), st.integers(10, 500)),
)
def test_no_lock_shape_makes_the_application_wait_past_the_lock_timeout(
    postgresql, fast_backoff, scenes, locked, hold_s, lock_timeout_ms, pinned
):
    fast_backoff.MAINTENANCE_LOCK_TIMEOUT_MS = lock_timeout_ms
    MaintenanceRun.objects.all().delete()
    Scene.objects.all().delete()
    ids = old_scenes(scenes)
    held = sorted({ids[int(share * len(ids))] for share in locked})
    others = [pk for pk in ids if pk not in held]
    holding, done = threading.Event(), threading.Event()
    waits = []

    def hold():
        with session() as holder, holder.transaction():
            holder.execute("SELECT id FROM chronicles_scene WHERE id = ANY(%s) FOR UPDATE", [held])
            holding.set()
            time.sleep(hold_s)

    def write():
        with session() as writer:
            n = 0
            while not done.is_set():
                started = time.monotonic()
                writer.execute(
                    "UPDATE chronicles_scene SET name = 'edited' WHERE id = %s",
                    [others[n % len(others)]],
                )
                waits.append(time.monotonic() - started)
                n += 7
                time.sleep(0.005)

    holder, _ = in_thread(hold)
    assert holding.wait(10)
    writer, _ = in_thread(write)
    try:
        run = execute(archive_run(**({} if pinned is None else {"batch_size": pinned})))
    finally:
        done.set()
        writer.join(10)
        holder.join(10)

    assert run.status == Status.SUCCEEDED, run.error
    assert unarchived() == 0
    assert run.changed == scenes  # each archived once: no batch counted twice
    logged = RunBatch.objects.filter(run=run)
    assert sum(logged.values_list("processed", flat=True)) == run.processed == scenes
    assert max(waits) < lock_timeout_ms / 1000 + 0.5


# --- what an operator sees ------------------------------------------------------------


def throttled_running_run(seconds_ago):
    run = archive_run()
    MaintenanceRun.objects.filter(pk=run.pk).claim("token", "worker-1")
    MaintenanceRun.objects.filter(pk=run.pk).update(
        throttled_s=6.04,
        throttle_reason="14 sessions waiting on locks > 10",
        throttled_at=timezone.now() - timezone.timedelta(seconds=seconds_ago),
        heartbeat_at=timezone.now(),
    )
    return MaintenanceRun.objects.get(pk=run.pk)


def test_a_throttled_run_shows_in_the_cli_json_admin_and_monitor(admin_client):
    from maintenance.monitoring import collect

    run = throttled_running_run(seconds_ago=1)
    assert run.status == Status.RUNNING

    line = run_progress_line(run)
    assert "throttled 6.0s now: 14 sessions waiting on locks > 10" in line
    summary = run_summary(run)
    assert (summary["throttled_s"], summary["throttled_now"]) == (6.0, True)
    assert summary["throttle_reason"] == "14 sessions waiting on locks > 10"

    page = admin_client.get(f"/admin/maintenance/maintenancerun/{run.pk}/change/").content
    assert b"throttled 6.0s now: 14 sessions waiting on locks &gt; 10" in page
    assert b"adaptive" in page

    report = collect(24)
    archive = report["operations"]["archive_old_scenes"]
    assert archive["throttled_s_in_period"] == 6.0
    assert archive["last_run"]["throttled_now"] is True
    check = next(c for c in report["checks"] if c["name"] == "archive_old_scenes")
    assert f"run #{run.pk} throttled 6.0s now" in check["detail"]
    assert check["status"] == "OK"


def test_a_throttle_long_past_is_history_not_now():
    run = throttled_running_run(seconds_ago=600)
    assert "throttled 6.0s: 14 sessions" in run_progress_line(run)
    assert run_summary(run)["throttled_now"] is False


def test_each_walk_of_a_validation_starts_its_sizes_afresh(settings):
    from chronicles.testdata.generator import Options, generate

    settings.MAINTENANCE_TARGET_BATCH_MS = 600_000  # every batch far below: sizes double
    generate(Options(seed=3, chronicles=2, characters=3_500, scenes=1_500, ledger_entries=1))
    run = execute(
        create_run(
            "validate_data_integrity",
            {"rules": ["character_xp_mismatch", "scene_activity_stale"], "dry_run": True},
            trigger=MaintenanceRun.Trigger.CLI,
        )
    )
    assert run.status == Status.SUCCEEDED
    walks = [
        (batch.position.get("walk"), batch.size)
        for batch in RunBatch.objects.filter(run=run).order_by("number")
    ]
    # 1,000 then 2,000 rows of characters; the scenes start again from 1,000.
    assert walks[0] == ("character_xp_mismatch", 1_000)
    assert walks[1][1] == 2_000
    # A batch's position is where the walk stands after it: the batch that finished the
    # characters already points at the scenes; the one after it is the first of theirs.
    turn = next(i for i, (walk, _) in enumerate(walks) if walk == "scene_activity_stale")
    assert walks[turn][1] > batch_size.START  # the characters' last batch had grown
    assert walks[turn + 1][1] == batch_size.START
