"""monitor_validation under hostile data: schedules of every django-celery-beat kind with
valid and invalid fields (a solar schedule without ephem, a clocked time in the past, an
unknown time zone, bad kwargs), long multi-line run errors with control characters, and
resume chains. It never shows a traceback, its exit code follows the worst check (Nagios:
CRITICAL 2 outranks UNKNOWN 3 outranks WARNING 1), and every detail is one short line."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone
from django_celery_beat.models import (
    PERIOD_CHOICES,
    SOLAR_SCHEDULES,
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maintenance import operations
from maintenance.heartbeat import NAME
from maintenance.models import Finding, Heartbeat, MaintenanceRun
from maintenance.monitoring import DETAIL_LIMIT, collect

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_answers")]
HYPOTHESIS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
OPERATIONS = [op.name for op in operations.all_operations()]
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
ROOT = Path(__file__).resolve().parent.parent


def expected_exit(statuses: list[str]) -> int:
    for status in ("CRITICAL", "UNKNOWN", "WARNING"):
        if status in statuses:
            return EXIT[status]
    return 0


@st.composite
def nasty_text(draw, max_repeat: int = 500) -> str:
    """Up to 100 KB with line breaks and control characters (no NUL: no database
    stores it in text)."""
    piece = draw(
        st.text(
            st.one_of(
                st.characters(codec="utf-8", exclude_characters="\x00"),
                st.sampled_from("\n\r\t\x0b\x0c\x1b\x7f\x85\u2028\u2029"),
            ),
            max_size=200,
        )
    )
    return (piece * draw(st.integers(1, max_repeat)))[:100_000]


CRON_FIELD = st.sampled_from(["*", "0", "30", "59", "*/5", "1-3", "0,30", "a", "", "99", "-1"])
TIME_ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Mars/Olympus", "+"])
KWARGS = st.sampled_from(
    ["{}", "", "[]", "null", '"text"', "not json", "{", '{"older_than_days": -5}']
    + ['{"older_than_days": "x"}', '{"older_than_days": 30}', '{"fix": "maybe"}', "[[[[[]]]]]"]
)


def crontab(draw) -> dict:
    fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
    return {"crontab": CrontabSchedule.objects.create(**{f: draw(CRON_FIELD) for f in fields})}


def set_time_zone(crontab_id: int, name: str) -> None:
    """Written past the model, as a restore or a hand-edited row would: the model
    refuses to load such a row at all."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {CrontabSchedule._meta.db_table} SET timezone = %s WHERE id = %s",
            [name, crontab_id],
        )


def interval(draw) -> dict:
    period = draw(st.sampled_from([p for p, _ in PERIOD_CHOICES] + ["eons"]))
    every = draw(st.integers(0, 10**6))
    return {"interval": IntervalSchedule.objects.create(every=every, period=period)}


def solar(draw) -> dict:
    event = draw(st.sampled_from([e for e, _ in SOLAR_SCHEDULES] + ["noon"]))
    latitude = draw(st.decimals(-90, 90, places=6, allow_nan=False))
    longitude = draw(st.decimals(-180, 180, places=6, allow_nan=False))
    return {
        "solar": SolarSchedule.objects.create(event=event, latitude=latitude, longitude=longitude)
    }


def clocked(draw) -> dict:
    moment = timezone.now() + timedelta(hours=draw(st.integers(-24 * 400, 24 * 400)))
    return {"clocked": ClockedSchedule.objects.create(clocked_time=moment), "one_off": True}


@st.composite
def schedules(draw) -> list[str]:
    names = []
    for number in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from([crontab, interval, solar, clocked]))
        name = f"schedule {number}"
        periodic_task = PeriodicTask.objects.create(
            name=name,
            task=f"maintenance.{draw(st.sampled_from(OPERATIONS))}",
            enabled=draw(st.booleans()),
            kwargs=draw(KWARGS),
            **kind(draw),
        )
        if periodic_task.crontab_id:
            set_time_zone(periodic_task.crontab_id, draw(TIME_ZONES))
        names.append(name)
    return names


@st.composite
def run_history(draw) -> int:
    now = timezone.now()
    runs = draw(st.integers(0, 8))
    for _ in range(runs):
        finished = now - timedelta(minutes=draw(st.integers(0, 60 * 24 * 10)))
        MaintenanceRun.objects.create(
            operation=draw(st.sampled_from(OPERATIONS)),
            trigger="beat",
            status=draw(st.sampled_from(["succeeded", "failed", "skipped", "queued"])),
            dry_run=draw(st.booleans()),
            created_at=finished - timedelta(minutes=1),
            finished_at=finished,
            error=draw(st.one_of(st.just(""), nasty_text())),
        )
    return runs


def heartbeat(draw) -> None:
    if draw(st.booleans()):
        Heartbeat.objects.create(
            name=NAME,
            seen_at=timezone.now() - timedelta(seconds=draw(st.integers(-60, 10**6))),
            hostname=draw(nasty_text(max_repeat=2))[:255],
        )


@st.composite
def hostile_state(draw) -> None:
    draw(schedules())
    draw(run_history())
    heartbeat(draw)


def monitor(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("monitor_validation", *args, stdout=out)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, out.getvalue()


def one_short_line(text: str | None) -> bool:
    return text is None or (len(text) <= DETAIL_LIMIT and len(text.splitlines()) <= 1)


@given(data=st.data())
@HYPOTHESIS
def test_hostile_schedules_and_histories_never_break_monitoring(data):
    with transaction.atomic():
        data.draw(hostile_state())

        report = collect(24)
        code, out = monitor("--json")
        text_code, text = monitor()

        transaction.set_rollback(True)  # each example starts from an empty database

    statuses = [check["status"] for check in report["checks"]]
    assert set(statuses) <= set(EXIT)
    assert code == text_code == expected_exit(statuses) == EXIT[report["health"]]
    assert json.loads(out)["health"] == report["health"]
    assert text.splitlines()[0].endswith(report["health"])
    for check in report["checks"]:
        assert one_short_line(check["detail"]), check
    for info in report["operations"].values():
        assert one_short_line((info["last_run"] or {}).get("error")), info["last_run"]
    assert one_short_line(report["heartbeat"]["hostname"])
    assert "Traceback" not in text


def schedule_for(operation: str, **schedule) -> None:
    PeriodicTask.objects.create(
        name=f"{operation} hostile", task=f"maintenance.{operation}", **schedule
    )


@pytest.mark.parametrize(
    "schedule",
    [
        lambda: {"solar": SolarSchedule.objects.create(event="sunset", latitude=10, longitude=10)},
        lambda: {
            "clocked": ClockedSchedule.objects.create(
                clocked_time=timezone.now() - timedelta(days=3)
            ),
            "one_off": True,
        },
        lambda: {"interval": IntervalSchedule.objects.create(every=1, period="eons")},
    ],
    ids=["solar-without-ephem", "clocked-in-the-past", "interval-bad-period"],
)
def test_a_schedule_that_cannot_be_evaluated_is_unknown(schedule):
    schedule_for("recalculate_xp", **schedule())

    code, out = monitor()
    report = collect(24)

    check = next(c for c in report["checks"] if c["name"] == "recalculate_xp")
    assert check["status"] == "UNKNOWN" and "cannot evaluate schedule" in check["detail"]
    assert one_short_line(check["detail"])
    assert code == 3 and report["health"] == "UNKNOWN"
    assert "Traceback" not in out


def test_an_unknown_time_zone_is_unknown_and_the_other_schedules_still_count():
    crontab = CrontabSchedule.objects.create(minute="0", hour="3")
    schedule_for("validate_data_integrity", crontab=crontab)
    set_time_zone(crontab.pk, "Mars/Olympus")

    report = collect(24)

    checks = {c["name"]: c for c in report["checks"]}
    assert checks["validate_data_integrity"]["status"] == "UNKNOWN"
    assert "Mars/Olympus" in checks["validate_data_integrity"]["detail"]
    assert checks["recalculate_xp"]["status"] in {"OK", "WARNING"}


def test_critical_outranks_unknown():
    schedule_for(
        "recalculate_xp",
        solar=SolarSchedule.objects.create(event="sunset", latitude=10, longitude=10),
    )
    for minutes in (1, 2, 3):
        MaintenanceRun.objects.create(
            operation="archive_old_scenes",
            trigger="beat",
            status="failed",
            finished_at=timezone.now() - timedelta(minutes=minutes),
            error="boom\n" * 10_000,
        )

    code, _ = monitor()

    assert code == 2 and collect(24)["health"] == "CRITICAL"


@pytest.mark.parametrize(
    "database_url",
    [
        "postgres://postgres@127.0.0.1:1/unreachable",
        "sqlite:////nonexistent-directory/db.sqlite3",
    ],
)
def test_an_unreachable_database_is_unknown_in_one_line(database_url):
    env = {**os.environ, "DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "manage.py", "monitor_validation"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 3
    assert "UNKNOWN" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unexpected_error_is_unknown_in_one_line(monkeypatch):
    # A real part cannot produce an arbitrary exception on demand: stand one in.
    from maintenance.management.commands import monitor_validation

    def broken(period):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(monitor_validation, "collect", broken)

    with pytest.raises(CommandError) as error:
        call_command("monitor_validation")

    assert error.value.returncode == 3 and "\n" not in str(error.value)


# --- resume chains -------------------------------------------------------------------

FINDING = st.tuples(
    st.sampled_from(["scene_without_chronicle", "character_xp_mismatch", "orphan_post"]),
    st.sampled_from(["Scene", "Character"]),
    st.integers(1, 8),
    st.booleans(),  # fixed
)


@st.composite
def resume_chain(draw) -> tuple[list[int], set]:
    """Failed attempts, each resumed by the next, the last one succeeding; each records
    findings. Returns (run ids newest first, the distinct unfixed findings)."""
    now = timezone.now()
    attempts = draw(st.integers(1, 5))
    previous, ids, unfixed = None, [], set()
    for number in range(attempts):
        last = number == attempts - 1
        run = MaintenanceRun.objects.create(
            operation="validate_data_integrity",
            trigger="beat",
            status="succeeded" if last else "failed",
            created_at=now - timedelta(hours=attempts - number),
            finished_at=now - timedelta(hours=attempts - number, minutes=-30),
            resumed_from=previous,
            error="" if last else draw(nasty_text(max_repeat=3)),
        )
        for rule, model, object_id, fixed in draw(st.lists(FINDING, max_size=12)):
            Finding.objects.create(
                run=run, rule=rule, model=model, object_id=object_id, fixed=fixed, message="m"
            )
            if not fixed:
                unfixed.add((rule, model, object_id))
        previous = run
        ids.insert(0, run.pk)
    return ids, unfixed


@given(data=st.data())
@HYPOTHESIS
def test_open_findings_count_the_whole_resume_chain(data):
    with transaction.atomic():
        # An older, unrelated validation whose findings must not count.
        older = MaintenanceRun.objects.create(
            operation="validate_data_integrity",
            trigger="beat",
            status="succeeded",
            created_at=timezone.now() - timedelta(days=3),
            finished_at=timezone.now() - timedelta(days=3),
        )
        Finding.objects.create(run=older, rule="old", model="Scene", object_id=1, message="m")
        ids, unfixed = data.draw(resume_chain())
        if data.draw(st.booleans()):  # bad data: the oldest attempt points back at the newest
            MaintenanceRun.objects.filter(pk=ids[-1]).update(resumed_from_id=ids[0])

        findings = collect(24)["findings"]
        code, text = monitor()

        transaction.set_rollback(True)

    assert findings["open"] == len(unfixed)
    by_rule: dict[str, int] = {}
    for rule, _, _ in unfixed:
        by_rule[rule] = by_rule.get(rule, 0) + 1
    assert findings["by_rule"] == by_rule
    assert findings["run_id"] == ids[0] and findings["run_ids"] == ids
    assert code in EXIT.values()
    assert f"Findings: {len(unfixed):,} open after run #{ids[0]}" in text
