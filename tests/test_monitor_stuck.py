"""monitor_validation sees stuck work (issue #17): a run past its lease, a run queued too
long, the broker unreachable or silent, a due time with no run. Each is a check with its
Nagios exit code and one line naming the run (or schedule) and since when; the JSON has
`queue_depth` and `stuck`. A property: under random heartbeat and queue ages around the
limits and random crontab schedules the monitor never breaks, and is CRITICAL exactly
when some lease has run out."""

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from celery import current_app
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from hypothesis import event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from maintenance import operations
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.heartbeat import NAME
from maintenance.models import Heartbeat, MaintenanceRun, RunPartition, TaskMessage
from maintenance.monitoring import DETAIL_LIMIT, collect
from maintenance.observability import queue
from maintenance.schedules import seed
from tests.properties import HYPOTHESIS
from tests.test_monitor_validation import monitor

pytestmark = pytest.mark.django_db
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
OPERATIONS = [op.name for op in operations.all_operations()]
ACTIVE = ("running", "pausing", "cancelling")
SCHEDULED = ("archive_old_scenes", "recalculate_xp", "validate_data_integrity", "purge_history")


def text_monitor() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("monitor_validation", stdout=out)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, out.getvalue()


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def one_line(text: str) -> bool:
    return len(text) <= DETAIL_LIMIT and len(text.splitlines()) == 1


def iso_second(moment: datetime) -> str:
    return (moment + timedelta(milliseconds=500)).replace(microsecond=0).isoformat()


@pytest.fixture
def broker_up(monkeypatch):
    """The default suite runs without a broker: these tests are about the other checks,
    so the broker answers with an empty queue (the broker tests below use real sockets)."""

    def answering() -> queue.BrokerState:
        return queue.BrokerState("redis://broker.test:6379/0", depth=0)

    monkeypatch.setattr(queue, "probe", answering)


@pytest.fixture
def alive():
    """Beat and a worker alive, the default schedules seeded (brand new), nothing run."""
    seed()
    Heartbeat.objects.create(name=NAME, seen_at=timezone.now(), hostname="worker-1")


@pytest.fixture
def healthy(alive, broker_up):
    """As `alive`, with a broker that answers."""


def active_run(operation: str, status: str = "running", heartbeat_age=None, **fields):
    now = timezone.now()
    return MaintenanceRun.objects.create(
        operation=operation,
        trigger="beat",
        status=status,
        started_at=now - timedelta(hours=1),
        heartbeat_at=None if heartbeat_age is None else now - heartbeat_age,
        lease_token="t" * 32,
        **fields,
    )


def partition(run, number: int, status: str, heartbeat_age=None, **fields):
    now = timezone.now()
    return RunPartition.objects.create(
        run=run,
        number=number,
        status=status,
        started_at=now - timedelta(hours=1),
        heartbeat_at=None if heartbeat_age is None else now - heartbeat_age,
        **fields,
    )


def lease() -> timedelta:
    return timedelta(seconds=settings.MAINTENANCE_LEASE_SECONDS)


def requeue() -> timedelta:
    return timedelta(seconds=settings.MAINTENANCE_REQUEUE_AFTER_SECONDS)


# --- each stuck state: exit code and the one line ---------------------------------


def test_a_healthy_state_stays_ok(healthy):
    for name in ("archive_old_scenes", "recalculate_xp", "validate_data_integrity"):
        assert execute(create_run(name, {}, trigger="beat")).status == "succeeded"
    # Work under way just inside every limit is not stuck.
    active_run("purge_history", heartbeat_age=lease() - timedelta(seconds=5))
    MaintenanceRun.objects.create(
        operation="recalculate_xp",
        trigger="cli",
        queued_at=timezone.now() - requeue() + timedelta(seconds=30),
    )
    split = active_run("archive_old_scenes", partitions=2, heartbeat_age=timedelta(hours=1))
    partition(split, 1, "running", heartbeat_age=timedelta(seconds=1))
    partition(split, 2, "succeeded", finished_at=timezone.now() - timedelta(hours=1))

    code, report = monitor()

    assert (report["health"], code) == ("OK", 0), report["checks"]
    assert report["stuck"] == [] and report["queue_depth"] == 0
    for name in ("broker", "stuck_running", "stuck_queued", "missed_due"):
        assert check(report, name)["status"] == "OK"
    assert "0 waiting in queue maintenance" in check(report, "broker")["detail"]


@pytest.mark.parametrize("status", ACTIVE)
def test_a_run_past_its_lease_is_critical_naming_it_and_its_last_heartbeat(healthy, status):
    run = active_run("archive_old_scenes", status, heartbeat_age=lease() + timedelta(minutes=5))

    code, report = monitor()

    assert (report["health"], code) == ("CRITICAL", 2)
    detail = check(report, "stuck_running")["detail"]
    assert check(report, "stuck_running")["status"] == "CRITICAL" and one_line(detail)
    assert (
        f"run #{run.pk} archive_old_scenes {status}, last heartbeat {iso_second(run.heartbeat_at)}"
        in detail
    )
    assert report["stuck"] == [
        {
            "run_id": run.pk,
            "partition": None,
            "operation": "archive_old_scenes",
            "status": status,
            "since": run.heartbeat_at.isoformat(),
            "reason": "lease_expired",
        }
    ]


def test_a_run_that_never_beat_counts_from_its_start(healthy):
    run = active_run("recalculate_xp")  # no heartbeat, started an hour ago

    code, report = monitor()

    assert code == 2
    assert (
        f"last heartbeat {iso_second(run.started_at)}" in check(report, "stuck_running")["detail"]
    )


def test_a_partition_past_its_lease_is_critical_naming_the_partition(healthy):
    run = active_run("validate_data_integrity", partitions=3, heartbeat_age=timedelta(hours=1))
    partition(run, 1, "succeeded", finished_at=timezone.now())
    dead = partition(run, 2, "running", heartbeat_age=timedelta(minutes=10))
    partition(run, 3, "running", heartbeat_age=timedelta(seconds=2))

    code, report = monitor()

    assert code == 2
    detail = check(report, "stuck_running")["detail"]
    assert detail.startswith("1 past the 60s lease")
    assert (
        f"partition 2 of run #{run.pk} validate_data_integrity running, last heartbeat "
        f"{iso_second(dead.heartbeat_at)}" in detail
    )
    assert [(s["run_id"], s["partition"]) for s in report["stuck"]] == [(run.pk, 2)]


def test_a_split_run_whose_partitions_all_ended_long_ago_is_stuck(healthy):
    run = active_run("validate_data_integrity", partitions=2, heartbeat_age=timedelta(hours=2))
    ended = timezone.now() - timedelta(minutes=30)
    partition(run, 1, "succeeded", finished_at=ended, heartbeat_age=timedelta(minutes=31))
    partition(run, 2, "succeeded", finished_at=ended, heartbeat_age=timedelta(minutes=31))

    code, report = monitor()

    assert code == 2
    assert (
        f"run #{run.pk} validate_data_integrity running, last heartbeat {iso_second(ended)}"
        in (check(report, "stuck_running")["detail"])
    )


def test_many_stuck_units_are_one_capped_line(healthy):
    run = active_run("validate_data_integrity", partitions=9, heartbeat_age=timedelta(hours=1))
    for number in range(1, 10):
        partition(run, number, "running", heartbeat_age=timedelta(minutes=10 + number))

    code, report = monitor()

    detail = check(report, "stuck_running")["detail"]
    assert code == 2 and one_line(detail)
    assert detail.startswith("9 past the 60s lease") and detail.endswith("and 4 more")
    assert detail.index("partition 9 of") < detail.index("partition 8 of")  # oldest first
    assert len(report["stuck"]) == 9


def test_a_run_queued_longer_than_the_requeue_delay_warns(healthy):
    queued_at = timezone.now() - requeue() - timedelta(minutes=2)
    run = MaintenanceRun.objects.create(
        operation="recalculate_xp", trigger="cli", queued_at=queued_at
    )

    code, report = monitor()

    assert (report["health"], code) == ("WARNING", 1)
    detail = check(report, "stuck_queued")["detail"]
    assert check(report, "stuck_queued")["status"] == "WARNING" and one_line(detail)
    assert detail.startswith("1 queued over 300s, not started: ")
    assert f"run #{run.pk} recalculate_xp queued since {iso_second(queued_at)}" in detail
    assert report["stuck"] == [
        {
            "run_id": run.pk,
            "partition": None,
            "operation": "recalculate_xp",
            "status": "queued",
            "since": queued_at.isoformat(),
            "reason": "not_started",
        }
    ]


def test_a_partition_queued_too_long_under_a_running_run_warns(healthy):
    run = active_run("archive_old_scenes", partitions=2, heartbeat_age=timedelta(hours=1))
    partition(run, 1, "running", heartbeat_age=timedelta(seconds=1))
    late = partition(run, 2, "queued", queued_at=timezone.now() - timedelta(hours=1))

    code, report = monitor()

    assert code == 1
    assert (
        f"partition 2 of run #{run.pk} archive_old_scenes queued since "
        in (check(report, "stuck_queued")["detail"])
    )
    assert report["stuck"][0]["since"] == late.queued_at.isoformat()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def broker_at(monkeypatch):
    """Point the Celery app at another broker URL (Celery reads CELERY_BROKER_URL from
    the environment before its own setting)."""

    def point(url: str) -> None:
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        monkeypatch.setattr(current_app.conf, "broker_url", url)

    return point


def test_an_unreachable_broker_is_critical_quickly_with_a_sanitised_url(alive, broker_at):
    port = closed_port()
    broker_at(f"redis://:s3cret@127.0.0.1:{port}/0")
    started = time.monotonic()

    code, report = monitor()
    text_code, text = text_monitor()

    assert time.monotonic() - started < 10  # two reports
    assert (report["health"], code, text_code) == ("CRITICAL", 2, 2)
    detail = check(report, "broker")["detail"]
    assert detail.startswith(f"the broker at redis://:**@127.0.0.1:{port}/0 is unreachable")
    assert one_line(detail) and "s3cret" not in json.dumps(report) + text
    assert report["queue_depth"] is None
    assert "Queue maintenance: unknown" in text


def test_a_silent_broker_is_critical_within_a_few_seconds(alive, broker_at):
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        broker_at(f"redis://127.0.0.1:{server.getsockname()[1]}/0")
        started = time.monotonic()

        code, report = monitor()

        assert time.monotonic() - started < 6
    assert code == 2 and check(report, "broker")["status"] == "CRITICAL"
    assert report["queue_depth"] is None


def test_a_queue_depth_that_cannot_be_read_warns(alive, monkeypatch):
    monkeypatch.setattr(queue, "check_broker", lambda: None)

    def refuse(name=None):
        raise OSError("the transport cannot count\nsecond line")

    # A real broker that answers a ping but refuses a declare is hard to come by.
    monkeypatch.setattr(queue, "queue_depth", refuse)

    code, report = monitor()

    assert code == 1 and report["queue_depth"] is None
    detail = check(report, "broker")["detail"]
    assert "depth of queue maintenance is unknown" in detail and one_line(detail)


def crontab_at(moment: datetime) -> CrontabSchedule:
    utc = moment.astimezone(UTC)
    return CrontabSchedule.objects.create(
        minute=str(utc.minute), hour=str(utc.hour), timezone="UTC"
    )


def daily_schedule(name: str, due: datetime, operation="recalculate_xp", **fields):
    """A daily crontab schedule last due at `due` (to the minute), in force since
    `fields['date_changed']` (default a day before)."""
    changed = fields.pop("date_changed", due - timedelta(days=1))
    task = PeriodicTask.objects.create(
        name=name, task=f"maintenance.{operation}", crontab=crontab_at(due), **fields
    )
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=changed)  # past auto_now
    return task


def due_minute(ago: timedelta) -> datetime:
    return (timezone.now() - ago).replace(second=0, microsecond=0)


def test_a_due_time_without_a_run_is_critical_long_before_overdue(healthy):
    due = due_minute(timedelta(minutes=15))
    daily_schedule("XP at a quarter past", due)

    code, report = monitor()

    assert (report["health"], code) == ("CRITICAL", 2)
    detail = check(report, "missed_due")["detail"]
    assert check(report, "missed_due")["status"] == "CRITICAL" and one_line(detail)
    assert detail == (
        f"no run recorded 600s after the due time: 'XP at a quarter past' due {due.isoformat()}"
    )
    # The operation's own check waits two hours before it says overdue.
    assert check(report, "recalculate_xp")["status"] == "OK"
    assert report["operations"]["recalculate_xp"]["overdue"] is False


def test_a_due_time_beat_sent_but_no_worker_recorded_is_critical(healthy):
    due = due_minute(timedelta(minutes=20))
    # Beat stamps last_run_at as it sends and then saves the row (date_changed moves).
    daily_schedule(
        "sent and lost",
        due,
        last_run_at=due + timedelta(seconds=1),
        date_changed=due + timedelta(minutes=2),
    )

    code, report = monitor()

    assert code == 2
    assert f"'sent and lost' due {due.isoformat()}" in check(report, "missed_due")["detail"]


def test_a_due_time_beat_recorded_sending_that_no_worker_took_yet_warns(healthy):
    due = due_minute(timedelta(minutes=20))
    daily_schedule("waiting in the queue", due, last_run_at=due + timedelta(seconds=1))
    TaskMessage.objects.create(
        task_id="sent-not-taken",
        operation="recalculate_xp",
        periodic_task_name="waiting in the queue",
        due_at=due,
        sent_by="host:1:abc",
    )

    code, report = monitor()

    assert code == 1
    missed = check(report, "missed_due")
    assert missed["status"] == "WARNING"
    assert missed["detail"] == (
        f"sent, but no worker has taken it in 600s: 'waiting in the queue' due "
        f"{due.isoformat()} (sent by beat host:1:abc)"
    )


@pytest.mark.parametrize("status", ["succeeded", "failed", "skipped", "queued", "running"])
def test_any_run_recorded_for_the_due_time_counts(healthy, status):
    due = due_minute(timedelta(minutes=15))
    daily_schedule("XP", due, last_run_at=due + timedelta(seconds=1))
    MaintenanceRun.objects.create(
        operation="validate_data_integrity",  # beat's run; the operation does not matter
        trigger="beat",
        status=status,
        dry_run=True,  # so a failed one is not the operation's latest failure
        periodic_task_name="XP",
        created_at=due + timedelta(seconds=3),
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        finished_at=timezone.now(),
    )

    code, report = monitor()

    assert check(report, "missed_due")["status"] == "OK", check(report, "missed_due")
    assert code == 0


def test_a_run_before_the_due_time_does_not_count(healthy):
    due = due_minute(timedelta(minutes=15))
    daily_schedule("XP", due)
    MaintenanceRun.objects.create(
        operation="recalculate_xp",
        trigger="beat",
        status="succeeded",
        periodic_task_name="XP",
        created_at=due - timedelta(minutes=1),
        finished_at=due - timedelta(seconds=30),
    )

    code, _ = monitor()

    assert code == 2


def test_a_brand_new_schedule_does_not_fire(healthy):
    due = due_minute(timedelta(minutes=15))
    daily_schedule("created after its time of day", due, date_changed=timezone.now())

    code, report = monitor()

    assert code == 0 and check(report, "missed_due")["status"] == "OK"


def test_a_due_time_within_the_grace_does_not_fire(healthy, settings):
    daily_schedule("five minutes late", due_minute(timedelta(minutes=5)))
    settings.MAINTENANCE_MISSED_DUE_GRACE_SECONDS = 600
    assert monitor()[0] == 0

    settings.MAINTENANCE_MISSED_DUE_GRACE_SECONDS = 60
    code, report = monitor()
    assert code == 2 and "no run recorded 60s after" in check(report, "missed_due")["detail"]


def test_the_heartbeat_schedule_and_disabled_ones_are_not_due_checked(healthy):
    long_ago = timezone.now() - timedelta(days=30)
    PeriodicTask.objects.update(date_changed=long_ago)  # heartbeat included: it records no run
    PeriodicTask.objects.exclude(task="maintenance.heartbeat").update(enabled=False)

    code, report = monitor()

    assert check(report, "missed_due") == {
        "name": "missed_due",
        "status": "OK",
        "detail": "0 schedules: no due time without a run",
    }
    assert code == 0


def test_the_seeded_schedules_untouched_for_days_are_each_missed(healthy):
    PeriodicTask.objects.update(date_changed=timezone.now() - timedelta(days=8))

    code, report = monitor()

    detail = check(report, "missed_due")["detail"]
    assert code == 2 and one_line(detail)
    for name in ("Validate data integrity (daily)", "Recalculate XP (daily)"):
        assert f"{name!r} due " in detail
    assert "Heartbeat" not in detail


def test_a_schedule_that_cannot_be_evaluated_stays_unknown(healthy):
    crontab = CrontabSchedule.objects.create(minute="0", hour="3")
    PeriodicTask.objects.create(name="mars", task="maintenance.recalculate_xp", crontab=crontab)
    PeriodicTask.objects.filter(name="mars").update(date_changed=timezone.now() - timedelta(days=3))
    with connection.cursor() as cursor:  # as a restore could: the model refuses such a row
        cursor.execute(
            f"UPDATE {CrontabSchedule._meta.db_table} SET timezone = %s WHERE id = %s",
            ["Mars/Olympus", crontab.pk],
        )

    code, report = monitor()

    assert code == 3 and check(report, "recalculate_xp")["status"] == "UNKNOWN"
    assert check(report, "missed_due")["status"] == "OK"


def test_every_existing_key_stays_and_the_new_ones_are_there(healthy):
    _, report = monitor()

    assert set(report) >= {
        "timestamp",
        "period_hours",
        "health",
        "checks",
        "operations",
        "heartbeat",
        "characters",
        "chronicles",
        "scenes",
        "findings",
        "queue_depth",
        "stuck",
    }
    names = [c["name"] for c in report["checks"]]
    assert names[-4:] == ["broker", "stuck_running", "stuck_queued", "missed_due"]


# --- the property ---------------------------------------------------------------------

# Ages in milliseconds around a limit: a few seconds either side, the boundary itself.
NEAR = st.one_of(st.integers(-3000, 3000), st.sampled_from([-1, 0, 1]))
PARTITION_STATUSES = st.sampled_from(
    ["queued", "running", "pausing", "cancelling", "paused", "interrupted", "succeeded", "failed"]
)


def _age(draw, limit_s: int) -> timedelta | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    if draw(st.booleans()):
        return timedelta(milliseconds=limit_s * 1000 + draw(NEAR))
    return timedelta(seconds=draw(st.integers(0, 10 * limit_s)))


def _moment(now: datetime, age: timedelta | None) -> datetime | None:
    return None if age is None else now - age


@st.composite
def stuck_state(draw, now: datetime) -> dict:
    """Active runs (one per operation), partitions, queued runs and crontab schedules;
    returns what the oracle needs."""
    lease_s = settings.MAINTENANCE_LEASE_SECONDS
    requeue_s = settings.MAINTENANCE_REQUEUE_AFTER_SECONDS
    units, split_runs, queued = [], [], []
    for operation in draw(st.lists(st.sampled_from(OPERATIONS), unique=True, max_size=4)):
        parts = draw(st.sampled_from([1, 1, 2, 3]))
        run = MaintenanceRun.objects.create(
            operation=operation,
            trigger="beat",
            status=draw(st.sampled_from(ACTIVE)),
            partitions=parts,
            started_at=_moment(now, _age(draw, lease_s)),
            heartbeat_at=_moment(now, _age(draw, lease_s)),
        )
        if parts == 1:
            units.append((run.heartbeat_at, run.started_at))
            continue
        signs = [run.heartbeat_at, run.started_at]
        for number in range(1, parts + 1):
            unit = RunPartition.objects.create(
                run=run,
                number=number,
                status=draw(PARTITION_STATUSES),
                started_at=_moment(now, _age(draw, lease_s)),
                heartbeat_at=_moment(now, _age(draw, lease_s)),
                finished_at=_moment(now, _age(draw, lease_s)),
                queued_at=now - (_age(draw, requeue_s) or timedelta(0)),
            )
            if unit.status in ACTIVE:
                units.append((unit.heartbeat_at, unit.started_at))
            if unit.status == "queued" and run.status == "running":
                queued.append(unit.queued_at)
            signs += [unit.heartbeat_at, unit.finished_at]
        statuses = set(RunPartition.objects.filter(run=run).values_list("status", flat=True))
        split_runs.append((statuses, [s for s in signs if s]))
    for _ in range(draw(st.integers(0, 3))):
        run = MaintenanceRun.objects.create(
            operation=draw(st.sampled_from(OPERATIONS)),
            trigger="cli",
            queued_at=now - (_age(draw, requeue_s) or timedelta(0)),
        )
        queued.append(run.queued_at)
    for number in range(draw(st.integers(0, 3))):
        # Random times of day; brand new, or older with a run recorded since (never missed).
        crontab = CrontabSchedule.objects.create(
            minute=str(draw(st.integers(0, 59))), hour=str(draw(st.integers(0, 23)))
        )
        name = f"cron {number}"
        PeriodicTask.objects.create(
            name=name, task=f"maintenance.{draw(st.sampled_from(SCHEDULED))}", crontab=crontab
        )
        if draw(st.booleans()):
            days = draw(st.integers(1, 400))
            last_sent = draw(st.one_of(st.none(), st.integers(0, days * 24 * 60)))
            PeriodicTask.objects.filter(name=name).update(
                date_changed=now - timedelta(days=days),
                last_run_at=None if last_sent is None else now - timedelta(minutes=last_sent),
            )
            MaintenanceRun.objects.create(
                operation="recalculate_xp",
                trigger="beat",
                status="skipped",
                periodic_task_name=name,
                created_at=now,
            )
    return {"units": units, "split_runs": split_runs, "queued": queued}


def lease_ran_out(state: dict, now: datetime) -> bool:
    """The oracle, from the rows as drawn: a unit whose last heartbeat (else start) is
    older than the lease, or never recorded; a split run with nothing waiting or working
    and no sign of life within the lease."""
    cutoff = now - lease()
    for heartbeat_at, started_at in state["units"]:
        last = heartbeat_at or started_at
        if last is None or last < cutoff:
            return True
    pending_or_working = {"queued", "interrupted", *ACTIVE}
    for statuses, signs in state["split_runs"]:
        if not statuses & pending_or_working and (not signs or max(signs) < cutoff):
            return True
    return False


def queued_too_long(state: dict, now: datetime) -> bool:
    return any(queued_at < now - requeue() for queued_at in state["queued"])


@given(data=st.data())
@hypothesis_settings(HYPOTHESIS, max_examples=60)
def test_the_monitor_is_critical_exactly_when_a_lease_ran_out(data, broker_up):
    with transaction.atomic():
        now = timezone.now()
        Heartbeat.objects.create(name=NAME, seen_at=now, hostname="worker-1")
        state = data.draw(stuck_state(now))

        report = collect(24, now=now)
        code, command_report = monitor()
        text_code, text = text_monitor()

        transaction.set_rollback(True)  # each example starts from an empty database

    expired = lease_ran_out(state, now)
    event(f"lease ran out: {expired}; queued too long: {queued_too_long(state, now)}")
    assert (report["health"] == "CRITICAL") == expired, report["checks"]
    assert (check(report, "stuck_running")["status"] == "CRITICAL") == expired
    assert (check(report, "stuck_queued")["status"] == "WARNING") == queued_too_long(state, now)
    assert check(report, "missed_due")["status"] == "OK", check(report, "missed_due")
    assert {s["reason"] for s in report["stuck"]} <= {"lease_expired", "not_started"}
    # Each command's own moment is its timestamp: the oracle again, at that moment.
    then = datetime.fromisoformat(command_report["timestamp"])
    text_then = datetime.fromisoformat(text.splitlines()[1].split()[1].rstrip(","))
    assert (code == 2) == lease_ran_out(state, then)
    assert (text_code == 2) == lease_ran_out(state, text_then)
    assert code == EXIT[command_report["health"]]
    assert "Traceback" not in text
    for entry in report["checks"] + command_report["checks"]:
        assert one_line(entry["detail"]), entry
