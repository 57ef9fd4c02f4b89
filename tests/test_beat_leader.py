"""Beat high availability without processes: the due time every beat computes alike, the
leader row, and the record that makes a due time sent once (tests/integration/
test_scheduling.py runs real beats)."""

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab, schedule
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.tzcrontab import TzAwareCrontab
from hypothesis import given
from hypothesis import strategies as st

from maintenance.beat import due, sends
from maintenance.beat.leader import LOCK_NAME, Leadership
from maintenance.models import BeatLeader, TaskMessage
from tests.properties import HYPOTHESIS

NOON = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC)  # a Thursday


# --- the due time ---


def test_the_last_fire_of_a_daily_crontab_is_today_or_yesterday():
    assert due.last_fire(crontab(minute="0", hour="3"), NOON) == NOON.replace(
        hour=3, minute=0, second=0
    )
    assert due.last_fire(crontab(minute="0", hour="13"), NOON) == datetime(
        2026, 12, 2, 13, 0, tzinfo=UTC
    )


def test_the_last_fire_follows_the_crontab_zone_and_its_weekday():
    berlin = TzAwareCrontab(minute="0", hour="3", tz=ZoneInfo("Europe/Berlin"))
    assert due.last_fire(berlin, NOON) == datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
    sundays = crontab(minute="30", hour="4", day_of_week="0")
    assert due.last_fire(sundays, NOON) == datetime(2026, 11, 29, 4, 30, tzinfo=UTC)
    leap_day = crontab(minute="0", hour="0", day_of_month="29", month_of_year="2")
    assert due.last_fire(leap_day, NOON) == datetime(2024, 2, 29, tzinfo=UTC)


small_sets = st.sets(st.integers(0, 59), min_size=1, max_size=3)


@HYPOTHESIS
@given(
    minutes=small_sets,
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=3),
    weekdays=st.sets(st.integers(0, 6), min_size=1, max_size=7),
    offset_minutes=st.integers(0, 14 * 24 * 60),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_the_last_fire_is_the_latest_matching_minute_at_or_before_now(
    minutes, hours, weekdays, offset_minutes, zone
):
    cron = TzAwareCrontab(
        minute=",".join(map(str, sorted(minutes))),
        hour=",".join(map(str, sorted(hours))),
        day_of_week=",".join(map(str, sorted(weekdays))),
        tz=ZoneInfo(zone),
    )
    now = datetime(2027, 3, 20, tzinfo=UTC) + timedelta(minutes=offset_minutes, seconds=17)
    fire = due.last_fire(cron, now)
    assert fire is not None and fire <= now

    def fires_at(moment):
        local = moment.astimezone(ZoneInfo(zone))
        return (
            local.minute in minutes and local.hour in hours and local.isoweekday() % 7 in weekdays
        )

    assert fires_at(fire)
    # No fire between it and now (checked minute by minute, in UTC, across DST changes).
    moment = fire.replace(second=0) + timedelta(minutes=1)
    while moment <= now:
        assert not fires_at(moment), (fire, moment)
        moment += timedelta(minutes=1)


def test_an_interval_is_due_one_interval_after_the_last_sent_due_time():
    every = schedule(timedelta(seconds=60))
    last = NOON
    assert due.due_time(every, NOON + timedelta(seconds=30), last) is None
    assert due.due_time(every, NOON + timedelta(seconds=59.9), last) == NOON + timedelta(seconds=60)
    later = NOON + timedelta(seconds=500, microseconds=1)
    assert due.due_time(every, later, last) == later.replace(microsecond=0)
    assert due.due_time(every, later, None) == later.replace(microsecond=0)


# --- the leader ---


@pytest.mark.django_db
def test_one_beat_leads_and_a_standby_takes_over_once_it_stops_renewing(caplog):
    caplog.set_level(logging.INFO, logger="maintenance.beat.leader")
    first, second = Leadership("host-a:1:aaaaaa", 30), Leadership("host-b:2:bbbbbb", 30)
    assert first.holds()
    assert not second.holds()
    assert "stands by: beat host-a:1:aaaaaa leads" in caplog.text

    # The first stops renewing (killed): once its hold expires the standby takes over.
    BeatLeader.objects.filter(name=LOCK_NAME).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    second._checked = float("-inf")
    assert second.holds()
    assert "beat host-b:2:bbbbbb takes over the lead from beat host-a:1:aaaaaa" in caplog.text
    first._checked = float("-inf")
    assert not first.holds()
    assert BeatLeader.objects.get().holder == "host-b:2:bbbbbb"


@pytest.mark.django_db
def test_a_clean_shutdown_hands_the_lead_over_at_once():
    first, second = Leadership("a", 30), Leadership("b", 30)
    assert first.holds() and not second.holds()
    first.release()
    second._checked = float("-inf")
    assert second.holds()


# --- each due time sent once ---


@pytest.mark.django_db
def test_a_due_time_is_sent_by_one_beat_and_not_again_after_a_restart():
    every_minute = crontab()
    at = NOON + timedelta(seconds=1)
    first = sends.decide("xp", "maintenance.recalculate_xp", every_minute, at, "beat-a")
    assert first.send and first.due_at == NOON.replace(second=0)
    assert first.task_id == sends.task_id_for("xp", NOON.replace(second=0))
    # A second beat, or the same beat restarted with a stale last_run_at.
    again = sends.decide(
        "xp", "maintenance.recalculate_xp", every_minute, at + timedelta(seconds=20), "beat-b"
    )
    assert not again.send and timedelta(0) < again.wait <= timedelta(seconds=60)
    following = sends.decide(
        "xp", "maintenance.recalculate_xp", every_minute, at + timedelta(seconds=60), "beat-b"
    )
    assert following.send and following.due_at == NOON.replace(second=0) + timedelta(minutes=1)
    sent = TaskMessage.objects.order_by("due_at")
    assert [m.sent_by for m in sent] == ["beat-a", "beat-b"]
    assert {m.operation for m in sent} == {"recalculate_xp"}


def test_the_task_id_of_a_due_time_does_not_depend_on_the_zone_it_is_written_in():
    berlin = NOON.astimezone(ZoneInfo("Europe/Berlin"))
    assert sends.task_id_for("xp", NOON) == sends.task_id_for("xp", berlin)
    assert sends.task_id_for("xp", NOON) != sends.task_id_for("other", NOON)


def _every_minute_task(name="every minute xp"):
    cron = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    return PeriodicTask.objects.create(name=name, task="maintenance.recalculate_xp", crontab=cron)


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_one_leads_and_a_due_entry_is_sent_by_the_leader_only(beat_scheduler):
    _every_minute_task()
    leader = beat_scheduler(lazy=True)
    standby = beat_scheduler(lazy=True)
    assert leader.leadership.holds() and not standby.leadership.holds()
    entry = leader.schedule["every minute xp"]
    entry.last_run_at = timezone.now() - timedelta(minutes=5)
    assert leader.is_due(entry).is_due
    # The same entry, found due again (a stale last_run_at): not sent twice.
    assert not leader.is_due(entry).is_due
    message = TaskMessage.objects.get()
    assert message.sent_by == leader.instance
    assert message.periodic_task_name == "every minute xp"


@pytest.mark.django_db
@HYPOTHESIS
@given(
    steps=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 150)), min_size=1, max_size=25),
    cron=st.booleans(),
)
def test_beats_deciding_in_any_order_send_each_due_time_once(steps, cron):
    TaskMessage.objects.all().delete()
    every = crontab() if cron else schedule(timedelta(seconds=60))
    now = NOON
    for beat, seconds in steps:
        now += timedelta(seconds=seconds)
        sends.decide("x", "maintenance.recalculate_xp", every, now, f"beat-{beat}")
    dues = sorted(TaskMessage.objects.values_list("due_at", flat=True))
    assert len(dues) == len(set(dues)) >= 1
    assert dues[-1] <= now + timedelta(seconds=5)  # an interval may be found due early
    gaps = [later - earlier for earlier, later in zip(dues, dues[1:], strict=False)]
    if cron:
        assert all(due.second == 0 and due.microsecond == 0 for due in dues)
    # However the beats interleave, two due times are at least an interval apart.
    assert all(gap >= timedelta(seconds=60) for gap in gaps), dues


# --- what the adversarial review found ---


@pytest.mark.django_db(transaction=True)
def test_a_due_time_the_broker_did_not_take_is_sent_at_the_next_try(monkeypatch, beat_scheduler):
    from celery.app.task import Task
    from kombu.exceptions import OperationalError as BrokerDown

    _every_minute_task()
    scheduler = beat_scheduler(lazy=True)
    assert scheduler.leadership.holds()
    entry = scheduler.schedule["every minute xp"]
    entry.last_run_at = timezone.now() - timedelta(minutes=5)
    sent = []

    def broker_down(self, *args, **kwargs):
        raise BrokerDown("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(Task, "apply_async", broker_down)
    assert scheduler.is_due(entry).is_due
    scheduler.reserve(entry)  # as beat's tick does, then it sends
    scheduler.apply_entry(entry)
    assert not TaskMessage.objects.exists()  # not sent: not recorded as sent
    assert not scheduler.is_due(entry).is_due  # tried again after a pause, not at once

    monkeypatch.setattr(Task, "apply_async", lambda self, *a, **k: sent.append(k) or "ok")
    scheduler._send_failed_at.clear()
    entry = scheduler._schedule["every minute xp"]
    assert scheduler.is_due(entry).is_due  # still due: its last_run_at was put back
    scheduler.reserve(entry)
    scheduler.apply_entry(entry)
    [options] = sent
    assert options.get("task_id") == TaskMessage.objects.get().task_id, options


@pytest.mark.django_db
def test_a_clocked_schedule_is_sent_once_whoever_finds_it_due():
    from django_celery_beat.clockedschedule import clocked

    at = clocked(NOON)
    first = sends.decide("once", "maintenance.recalculate_xp", at, NOON + timedelta(seconds=1), "a")
    again = sends.decide(
        "once", "maintenance.recalculate_xp", at, NOON + timedelta(seconds=40), "b"
    )
    assert first.send and first.due_at == NOON and not again.send


@pytest.mark.django_db(transaction=True)
def test_the_leader_wakes_in_time_to_renew_a_short_lease(beat_scheduler):
    scheduler = beat_scheduler(lazy=True)
    scheduler.leadership = Leadership(scheduler.instance, 3)
    assert scheduler.tick() <= 1.0
    assert scheduler.tick() <= 1.0
