"""Schedules and time zones: each seeded schedule has a crontab row of its own (never
celery.backend_cleanup's), setup_schedules reports schedules left in another zone than
TIME_ZONE and --retime moves them, and crontab times that daylight saving time makes
missing or doubled are found (maintenance.dst) and warned about, in the command and
in the CrontabSchedule admin."""

import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import pytest
from celery.schedules import crontab
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import ModelEntry
from django_celery_beat.tzcrontab import TzAwareCrontab
from hypothesis import given
from hypothesis import strategies as st

from maintenance.dst import GAP, REPEAT, dst_problems, dst_warning
from maintenance.schedules import DEFAULT_SCHEDULES, seed
from tests.properties import HYPOTHESIS
from worker.celery import app

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = "Archive old scenes (daily)"
VALIDATE = "Validate data integrity (daily)"
CLEANUP = "celery.backend_cleanup"
CRONTAB_DEFAULTS = [default for default in DEFAULT_SCHEDULES if default.crontab]
WINTER = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def setup_schedules(*args) -> str:
    out = StringIO()
    call_command("setup_schedules", *args, stdout=out)
    return out.getvalue()


def beat_installs_backend_cleanup():
    """What django-celery-beat's scheduler does at each start when results expire."""
    return ModelEntry.from_entry(
        CLEANUP,
        app=app,
        task=CLEANUP,
        schedule=crontab("0", "4", "*"),
        options={"expire_seconds": 12 * 3600},
    ).model


def task(name) -> PeriodicTask:
    return PeriodicTask.objects.select_related("crontab").get(name=name)


def last_update():
    return PeriodicTasks.objects.filter(ident=1).values_list("last_update", flat=True).first()


# --- a crontab row of its own -------------------------------------------------------


@pytest.mark.django_db
def test_each_seeded_schedule_has_its_own_row_beside_backend_cleanup():
    cleanup = beat_installs_backend_cleanup()

    seed()

    rows = [task(default.name).crontab_id for default in CRONTAB_DEFAULTS]
    assert len(set(rows)) == len(rows) and cleanup.crontab_id not in rows
    archive = task(ARCHIVE).crontab
    assert (archive.minute, archive.hour) == ("0", "4")
    archive.hour = "5"  # an admin re-times the archive's crontab in the admin
    archive.save()
    cleanup.refresh_from_db()
    assert (cleanup.crontab.minute, cleanup.crontab.hour) == ("0", "4")


@pytest.mark.django_db
def test_a_shared_row_of_an_existing_install_is_split_once():
    cleanup = beat_installs_backend_cleanup()
    seed()
    archive = task(ARCHIVE)
    own = archive.crontab_id
    # What seeding used to do: get_or_create found backend_cleanup's 04:00 row.
    archive.crontab = cleanup.crontab
    archive.enabled, archive.kwargs = False, '{"older_than_days": 30}'  # an admin's edits
    archive.save()
    rows_before, changed_before = CrontabSchedule.objects.count(), last_update()

    first = setup_schedules()

    archive = task(ARCHIVE)
    split = [line for line in first.splitlines() if line.startswith("split")]
    assert split == [
        f"split    {ARCHIVE}: has a crontab row of its own now (#{archive.crontab_id}); "
        f"{CLEANUP} keeps #{cleanup.crontab_id}"
    ]
    assert archive.crontab_id not in (cleanup.crontab_id, own)
    fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")
    values = [getattr(archive.crontab, f) for f in fields]
    assert values == [getattr(task(CLEANUP).crontab, f) for f in fields]
    assert task(CLEANUP).crontab_id == cleanup.crontab_id  # the other task keeps its row
    assert CrontabSchedule.objects.count() == rows_before + 1  # nothing deleted
    assert (archive.enabled, archive.kwargs) == (False, '{"older_than_days": 30}')
    assert last_update() > changed_before  # a running beat reloads

    second = setup_schedules()

    assert "split" not in second and "Nothing changed." in second
    assert task(ARCHIVE).crontab_id == archive.crontab_id


@pytest.mark.django_db
def test_a_beat_started_after_seeding_may_take_a_seeded_row_and_is_split_off_again():
    seed()
    archive_row = task(ARCHIVE).crontab_id

    cleanup = beat_installs_backend_cleanup()  # django-celery-beat finds a row by fields

    assert cleanup.crontab_id == archive_row  # shared again, by beat
    out = setup_schedules()
    assert f"split    {ARCHIVE}" in out
    assert task(ARCHIVE).crontab_id != task(CLEANUP).crontab_id == archive_row


@pytest.mark.django_db(transaction=True)  # beat closes old connections as it reads
def test_beat_starting_puts_backend_cleanup_on_a_row_of_its_own_without_new_rows_each_time(
    beat_scheduler,
):
    seed()
    archive_row = task(ARCHIVE).crontab_id
    rows = []
    for _ in range(3):  # beat started three times
        beat_scheduler().leadership.release()
        rows.append(CrontabSchedule.objects.count())
        assert task(CLEANUP).crontab_id != archive_row
        assert task(ARCHIVE).crontab_id == archive_row
        assert list(PeriodicTask.objects.filter(crontab_id=archive_row)) == [task(ARCHIVE)]
    assert rows[0] == rows[1] == rows[2]  # the first start made the one row it needs


@pytest.mark.django_db
def test_a_first_run_creates_and_a_second_says_nothing_changed():
    first = setup_schedules()
    assert first.count("created  ") == len(DEFAULT_SCHEDULES)
    assert "Nothing changed." not in first

    second = setup_schedules()
    assert second.count("kept     ") == len(DEFAULT_SCHEDULES)
    assert second.splitlines()[-1] == "Nothing changed."


# --- TIME_ZONE changes ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_time_zone_change_is_reported_and_nothing_moves(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    seed()
    settings.TIME_ZONE = "UTC"

    out = setup_schedules()

    assert f"{VALIDATE} runs at 03:00 Europe/Berlin; TIME_ZONE is UTC: run setup_schedules " in out
    assert "--retime to move it to 03:00 UTC" in out
    reported = [line for line in out.splitlines() if "TIME_ZONE is UTC" in line]
    assert len(reported) == len(CRONTAB_DEFAULTS)
    assert "Purge run history (weekly) runs at 04:30 Europe/Berlin" in out
    zones = {str(row.timezone) for row in CrontabSchedule.objects.all()}
    assert zones == {"Europe/Berlin"}


@pytest.mark.django_db
def test_retime_moves_the_schedules_on_rows_of_their_own(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    seed()
    validate_row = task(VALIDATE).crontab
    other = PeriodicTask.objects.create(name="other", task="chronicles.other", crontab=validate_row)
    settings.TIME_ZONE = "UTC"
    changed_before = last_update()

    out = setup_schedules("--retime")

    assert f"moved    {VALIDATE} from 03:00 Europe/Berlin to 03:00 UTC" in out
    assert len([line for line in out.splitlines() if line.startswith("moved")]) == 4
    for default in CRONTAB_DEFAULTS:
        row = task(default.name).crontab
        assert str(row.timezone) == "UTC"
        assert (row.minute, row.hour) == (default.crontab["minute"], default.crontab["hour"])
        assert row.day_of_week == default.crontab.get("day_of_week", "*")
    other.refresh_from_db()
    assert other.crontab_id == validate_row.pk and str(other.crontab.timezone) == "Europe/Berlin"
    assert task(VALIDATE).crontab_id != validate_row.pk
    assert last_update() > changed_before
    assert "TIME_ZONE is" not in setup_schedules()

    again = setup_schedules("--retime")

    assert "Nothing to retime: every maintenance schedule runs in UTC." in again
    assert "Nothing changed." in again


@pytest.mark.django_db
def test_a_schedule_of_another_maintenance_task_is_reported_too(settings):
    seed()
    row = CrontabSchedule.objects.create(minute="*/10", hour="1", timezone="Asia/Tokyo")
    PeriodicTask.objects.create(name="mine", task="maintenance.recalculate_xp", crontab=row)

    out = setup_schedules()

    assert "mine runs at '*/10 1 * * *' Asia/Tokyo; TIME_ZONE is UTC" in out
    assert out.count("TIME_ZONE is") == 1


def test_bad_usage_is_one_line_and_exit_2():
    with pytest.raises(CommandError) as raised:
        call_command("setup_schedules", "--retime", "extra")
    assert raised.value.returncode == 2

    done = subprocess.run(
        [sys.executable, "manage.py", "setup_schedules", "--no-such-flag"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--no-such-flag" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


# --- daylight saving time: finding the times ---------------------------------------


def last_sunday(year, month) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)


def found(fields, now=WINTER, **kwargs):
    return [(p.kind, p.local) for p in dst_problems(fields, now, **kwargs)]


def test_europe_berlin_0230_is_missing_in_march_and_doubled_in_october():
    assert found({"minute": "30", "hour": "2", "timezone": "Europe/Berlin"}) == [
        (
            GAP,
            datetime.combine(last_sunday(2026, 3), datetime.min.time()).replace(hour=2, minute=30),
        ),
        (
            REPEAT,
            datetime.combine(last_sunday(2026, 10), datetime.min.time()).replace(hour=2, minute=30),
        ),
    ]
    assert last_sunday(2026, 3) == date(2026, 3, 29) and last_sunday(2026, 10) == date(2026, 10, 25)


def test_new_york_has_its_own_dates_and_hours():
    zone = "America/New_York"
    assert found({"minute": "30", "hour": "2", "timezone": zone}) == [
        (GAP, datetime(2026, 3, 8, 2, 30))
    ]
    assert found({"minute": "30", "hour": "1", "timezone": zone}) == [
        (REPEAT, datetime(2026, 11, 1, 1, 30))
    ]
    assert found({"minute": "0", "hour": "3", "timezone": zone}) == []


def test_utc_and_times_clear_of_the_change_have_none():
    assert found({"minute": "*", "hour": "*", "timezone": "UTC"}) == []
    assert found({"minute": "0", "hour": "5", "timezone": "Europe/Berlin"}) == []
    assert found({"minute": "0", "hour": "3", "timezone": "Europe/Berlin"}) == []


def test_days_that_never_fall_on_the_change_have_none():
    berlin = {"minute": "30", "hour": "2", "timezone": "Europe/Berlin"}
    assert found({**berlin, "day_of_week": "3"}) == []  # Wednesdays; the changes are Sundays
    assert found({**berlin, "day_of_week": "mon-sat"}) == []
    assert found({**berlin, "day_of_month": "1-20"}) == []  # last Sundays are after the 21st
    assert found({**berlin, "month_of_year": "3"}) == [(GAP, datetime(2026, 3, 29, 2, 30))]
    assert found({**berlin, "day_of_week": "0", "month_of_year": "10"}) == [
        (REPEAT, datetime(2026, 10, 25, 2, 30))
    ]


def test_a_crontab_row_is_read_like_its_fields():
    row = CrontabSchedule(minute="15,45", hour="2", timezone=BERLIN)  # not saved
    assert found(row) == [
        (GAP, datetime(2026, 3, 29, 2, 15)),
        (GAP, datetime(2026, 3, 29, 2, 45)),
        (REPEAT, datetime(2026, 10, 25, 2, 15)),
        (REPEAT, datetime(2026, 10, 25, 2, 45)),
    ]


def test_the_window_is_the_next_366_days():
    berlin = {"minute": "30", "hour": "2", "timezone": "Europe/Berlin"}
    spring = datetime(2026, 4, 1, tzinfo=UTC)
    assert found(berlin, spring) == [
        (REPEAT, datetime(2026, 10, 25, 2, 30)),
        (GAP, datetime(2027, 3, 28, 2, 30)),
    ]
    assert found(berlin, spring, days=30) == []


@pytest.mark.parametrize("late", [0, 0.3, 1, 1.7, 2])
def test_a_now_just_after_the_time_of_day_of_a_change_finds_it(late):
    # The days looked at start at `now`'s time of day: the change (01:00:00 UTC) may
    # fall just before the end of the day it is found in.
    now = datetime(2026, 3, 20, 1, 0, tzinfo=UTC) + timedelta(seconds=late)
    assert found({"minute": "0", "hour": "2", "timezone": "Europe/Berlin"}, now)[0] == (
        GAP,
        datetime(2026, 3, 29, 2, 0),
    )


def test_invalid_fields_are_a_value_error():
    with pytest.raises(ValueError):
        dst_problems({"minute": "61", "hour": "2", "timezone": "Europe/Berlin"}, WINTER)


def naive_kind(day: date, hour: int, minute: int, zone: ZoneInfo) -> str | None:
    """Whether a local time does not exist (a round trip through UTC changes it) or
    happens twice (its two folds have different offsets)."""
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    back = local.astimezone(UTC).astimezone(zone)
    if back.replace(tzinfo=None) != local.replace(tzinfo=None):
        return GAP
    if local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset():
        return REPEAT
    return None


@HYPOTHESIS
@given(
    zone=st.sampled_from(sorted(available_timezones())),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    now=st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_dst_problems_flags_exactly_what_a_naive_check_of_every_day_flags(zone, hour, minute, now):
    tz = ZoneInfo(zone)
    problems = found({"minute": str(minute), "hour": str(hour), "timezone": zone}, now)

    first, last = now.astimezone(tz).date(), (now + timedelta(days=366)).astimezone(tz).date()
    expected = []
    day = first
    while day <= last:
        kind = naive_kind(day, hour, minute, tz)
        if kind:
            expected.append((kind, datetime(day.year, day.month, day.day, hour, minute)))
        day += timedelta(days=1)
    assert problems == expected


# --- daylight saving time: what beat does, and the warnings ------------------------


def beat_by_the_minute(fields: dict, zone: ZoneInfo, start: datetime, end: datetime):
    """The local times at which beat's own crontab is due, asked once a minute as a
    running beat would, each run stamping last_run_at."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # real minutes, not wall time
    clock = [start]
    cron = TzAwareCrontab(**fields, tz=zone, app=app)
    cron.nowfun = lambda: clock[0].astimezone(zone)
    last, runs = start, []
    while clock[0] < end:
        if cron.is_due(last).is_due:
            runs.append(clock[0].astimezone(zone))
            last = clock[0]
        clock[0] += timedelta(minutes=1)
    return runs


def test_what_the_warning_says_beat_does_is_what_beat_does():
    fields = {"minute": "0,30", "hour": "2"}
    spring = beat_by_the_minute(
        fields,
        BERLIN,
        datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN),
        datetime(2026, 3, 29, 12, tzinfo=BERLIN),
    )
    autumn = beat_by_the_minute(
        fields,
        BERLIN,
        datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN),
        datetime(2026, 10, 25, 12, tzinfo=BERLIN),
    )

    assert [f"{t:%H:%M%z}" for t in spring] == ["03:00+0200"]  # 02:00 shifted, 02:30 skipped
    assert [f"{t:%H:%M%z}" for t in autumn] == ["02:00+0200", "02:30+0200"]  # the first only
    warning = dst_warning({**fields, "timezone": "Europe/Berlin"}, WINTER)
    assert warning == (
        "This crontab meets a daylight saving time change within 366 days: "
        "Sun 2026-03-29: 02:00, 02:30 do not exist in Europe/Berlin (the clocks jump from "
        "02:00 to 03:00); beat runs 02:00 at 03:00 instead and skips 02:30; "
        "Sun 2026-10-25: 02:00, 02:30 happen twice in Europe/Berlin (the clocks go back "
        "from 03:00 to 02:00); beat runs 02:00, 02:30 once, at the first (UTC+02:00)."
    )


def test_a_single_missing_time_runs_an_hour_later():
    warning = dst_warning({"minute": "30", "hour": "2", "timezone": "America/New_York"}, WINTER)
    assert "Sun 2026-03-08: 02:30 does not exist in America/New_York" in warning
    assert "beat runs 02:30 at 03:30 instead." in warning
    assert dst_warning({"minute": "0", "hour": "5", "timezone": "Europe/Berlin"}, WINTER) is None


@pytest.mark.django_db
def test_setup_schedules_warns_of_seeded_times_in_a_zone_that_changes_at_3(settings):
    settings.TIME_ZONE = "Europe/Helsinki"  # its clocks change at 03:00, the validation's hour

    out = setup_schedules()

    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert [line.split(" meets ")[0] for line in warnings] == [
        "warning: Recalculate XP (daily)",
        f"warning: {VALIDATE}",
    ]
    assert all("does not exist in Europe/Helsinki" in line for line in warnings)
    assert all("happens twice in Europe/Helsinki" in line for line in warnings)


# --- the CrontabSchedule admin ----------------------------------------------------------


def crontab_form(hour, minute="30", zone="Europe/Berlin", **extra):
    return {
        "minute": minute,
        "hour": hour,
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "*",
        "timezone": zone,
        "periodictask_set-TOTAL_FORMS": "0",
        "periodictask_set-INITIAL_FORMS": "0",
        "periodictask_set-MIN_NUM_FORMS": "0",
        "periodictask_set-MAX_NUM_FORMS": "0",
        **extra,
    }


def shown_messages(response) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in response.context["messages"]]


@pytest.mark.django_db
def test_saving_a_crontab_in_a_gap_shows_the_warning(admin_client):
    add = reverse("admin:django_celery_beat_crontabschedule_add")

    response = admin_client.post(add, crontab_form("2"), follow=True)

    assert response.status_code == 200
    row = CrontabSchedule.objects.get()
    (problem, *_) = dst_problems(row, timezone.now())
    warnings = [text for level, text in shown_messages(response) if level == "warning"]
    assert len(warnings) == 1
    assert f"{problem.local:%Y-%m-%d}" in warnings[0]
    assert "02:30" in warnings[0] and "Europe/Berlin" in warnings[0]
    assert re.search(r"does not exist|happens twice", warnings[0])


@pytest.mark.django_db
def test_saving_a_crontab_clear_of_the_change_shows_none(admin_client):
    add = reverse("admin:django_celery_beat_crontabschedule_add")
    response = admin_client.post(add, crontab_form("5", minute="0"), follow=True)

    assert response.status_code == 200
    assert CrontabSchedule.objects.filter(hour="5").exists()
    assert [level for level, _ in shown_messages(response)] == ["success"]

    row = CrontabSchedule.objects.get()
    change = reverse("admin:django_celery_beat_crontabschedule_change", args=[row.pk])
    response = admin_client.post(change, crontab_form("2"), follow=True)  # now at 02:30
    assert [level for level, _ in shown_messages(response)] == ["warning", "success"]
