"""Crontab fire times that daylight saving time (or any change of a zone's UTC offset)
turns into a local time that does not exist (a gap: the clocks jump forward) or that
happens twice (a repeat: the clocks go back), and what beat does with them.

Pure: zoneinfo, celery's crontab parsing and django-celery-beat's time-zone-aware
crontab (the schedule beat uses); no database."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from celery.schedules import crontab
from django_celery_beat.tzcrontab import TzAwareCrontab

GAP = "gap"  # the local time does not exist that day
REPEAT = "repeat"  # the local time happens twice that day
DAYS = 366
CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
# Above this many runs in the two days around a change, the walk through beat's runs
# stops; "every minute" is 2,880 of them.
MAX_RUNS = 10_000
SHOWN = 4  # times listed in a message before "and N more"


@dataclass(frozen=True)
class Transition:
    """A change of a zone's UTC offset, at the UTC instant `at`."""

    at: datetime
    before: timedelta
    after: timedelta

    @property
    def kind(self) -> str:
        return GAP if self.after > self.before else REPEAT

    def wall_times(self) -> tuple[datetime, datetime]:
        """The naive local times [start, end) that are missing (a gap) or doubled."""
        low, high = sorted((self.before, self.after))
        return naive(self.at + low), naive(self.at + high)


@dataclass(frozen=True)
class DstProblem:
    kind: str  # GAP or REPEAT
    local: datetime  # the naive local fire time
    zone: ZoneInfo
    transition: Transition


def naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def cron_fields(schedule) -> tuple[dict[str, str], ZoneInfo]:
    """The five crontab fields and the zone of a CrontabSchedule or of a mapping with
    the same keys (a missing field is "*", a missing zone UTC)."""
    if isinstance(schedule, Mapping):
        fields = {name: str(schedule.get(name, "*")) for name in CRON_FIELDS}
        zone = schedule.get("timezone") or "UTC"
    else:
        fields = {name: str(getattr(schedule, name)) for name in CRON_FIELDS}
        zone = schedule.timezone or "UTC"
    return fields, zone if isinstance(zone, ZoneInfo) else ZoneInfo(str(zone))


def fires_on(cron: crontab, day: date) -> bool:
    # celery needs both day fields to match (not cron's "either"), Sunday is 0.
    return (
        day.month in cron.month_of_year
        and day.day in cron.day_of_month
        and day.isoweekday() % 7 in cron.day_of_week
    )


def offset(zone: ZoneInfo, moment: datetime) -> timedelta:
    return moment.astimezone(zone).utcoffset()


def transitions(zone: ZoneInfo, start: datetime, end: datetime) -> list[Transition]:
    """The offset changes of `zone` between two aware instants. Offsets are compared a
    day apart, then the change is narrowed to the second: two changes within one day
    (none in today's tz database) would be missed."""
    found = []
    moment = start
    while moment < end:
        following = moment + timedelta(days=1)
        if offset(zone, moment) != offset(zone, following):
            found.append(_narrow(zone, moment, following))
        moment = following
    return found


def _narrow(zone: ZoneInfo, low: datetime, high: datetime) -> Transition:
    """The change between `low` (old offset) and `high` (new offset), to the second:
    changes in the tz database fall on whole seconds, so bisect whole seconds."""
    before, after = offset(zone, low), offset(zone, high)
    old, new = math.floor(low.timestamp()), math.ceil(high.timestamp())
    while new - old > 1:
        middle = (old + new) // 2
        if offset(zone, datetime.fromtimestamp(middle, UTC)) == before:
            old = middle
        else:
            new = middle
    return Transition(at=datetime.fromtimestamp(new, UTC), before=before, after=after)


def dst_problems(schedule, now: datetime, days: int = DAYS) -> list[DstProblem]:
    """The fire times of a crontab (a CrontabSchedule or a mapping of its fields) on the
    local dates from today to `days` ahead in its own zone that do not exist or happen
    twice, in time order. Only the days of a change and the crontab's own hour/minute
    combinations on them are looked at. ValueError for a field celery cannot parse."""
    fields, zone = cron_fields(schedule)
    cron = crontab(**fields)
    first = now.astimezone(zone).date()
    last = (now + timedelta(days=days)).astimezone(zone).date()
    times = sorted(time(hour, minute) for hour in cron.hour for minute in cron.minute)
    # A day more each side: a change just outside the window can move times inside it.
    changes = transitions(zone, now - timedelta(days=2), now + timedelta(days=days + 2))
    problems = []
    for change in changes:
        start, end = change.wall_times()
        day = start.date()
        while day <= naive(end - timedelta(microseconds=1)).date():
            if first <= day <= last and fires_on(cron, day):
                problems += [
                    DstProblem(change.kind, local, zone, change)
                    for local in (datetime.combine(day, at) for at in times)
                    if start <= local < end
                ]
            day += timedelta(days=1)
    return sorted(problems, key=lambda problem: problem.local)


def beat_runs(schedule, start: datetime, end: datetime) -> set[datetime]:
    """The UTC instants at which beat sends a crontab between `start` and `end`: each
    run is the crontab's next time after the one before, as beat's own crontab
    (django-celery-beat's zone-aware one) computes it from the last run's time."""
    fields, zone = cron_fields(schedule)
    cron = TzAwareCrontab(**fields, tz=zone)
    clock = [start]
    cron.nowfun = lambda: clock[0]
    runs: set[datetime] = set()
    last = start.astimezone(UTC)
    while len(runs) < MAX_RUNS:
        clock[0] = last
        following = (last + cron.remaining_estimate(last)).astimezone(UTC)
        if following <= last or following > end:
            break
        runs.add(following)
        last = following  # in UTC, as beat reads last_run_at back: the right fold
    return runs


def _hhmm(moment: datetime) -> str:
    return f"{moment:%H:%M}"


def _listed(items: list[str]) -> str:
    shown = items[:SHOWN]
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(shown) + more


def _utc_offset(moment: datetime) -> str:
    minutes = int(moment.utcoffset().total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _regular(cron: crontab, moment: datetime) -> bool:
    return moment.hour in cron.hour and moment.minute in cron.minute and fires_on(cron, moment)


def _gap_outcome(cron: crontab, problem: DstProblem, runs: set[datetime]) -> tuple[str, str]:
    # zoneinfo reads a missing time with the offset before the change (fold 0): the
    # instant celery's crontab lands on when it runs it.
    shifted = problem.local.replace(tzinfo=problem.zone).astimezone(UTC)
    local = shifted.astimezone(problem.zone)
    if shifted in runs and not _regular(cron, local):
        return "runs {} instead", f"{_hhmm(problem.local)} at {_hhmm(local)}"
    return "skips {}", _hhmm(problem.local)


def _repeat_outcome(problem: DstProblem, runs: set[datetime]) -> tuple[str, str]:
    first, second = (
        problem.local.replace(tzinfo=problem.zone, fold=fold).astimezone(UTC) for fold in (0, 1)
    )
    label = _hhmm(problem.local)
    if first in runs and second in runs:
        return "runs {} twice", label
    if first in runs or second in runs:
        which, moment = ("first", first) if first in runs else ("second", second)
        return (
            f"runs {{}} once, at the {which} ({_utc_offset(moment.astimezone(problem.zone))})",
            label,
        )
    return "skips {}", label


def _grouped(outcomes: list[tuple[str, str]]) -> str:
    """One phrase per outcome, naming the times it has, in order of appearance."""
    by_phrase: dict[str, list[str]] = {}
    for phrase, item in outcomes:
        by_phrase.setdefault(phrase, []).append(item)
    return " and ".join(phrase.format(_listed(items)) for phrase, items in by_phrase.items())


def describe(schedule, problems: list[DstProblem]) -> list[str]:
    """One sentence per change of offset: the date, the times it hits and what beat
    does with each."""
    fields, zone = cron_fields(schedule)
    cron = crontab(**fields)
    by_change: dict[Transition, list[DstProblem]] = {}
    for problem in problems:
        by_change.setdefault(problem.transition, []).append(problem)
    sentences = []
    for change, hits in by_change.items():
        span = abs(change.after - change.before)
        runs = beat_runs(
            schedule, change.at - timedelta(days=1), change.at + timedelta(days=1) + span
        )
        start, end = change.wall_times()
        labels = _listed([_hhmm(hit.local) for hit in hits])
        plural = len(hits) > 1
        if change.kind == GAP:
            what = (
                f"{labels} {'do' if plural else 'does'} not exist in {zone.key} (the clocks "
                f"jump from {_hhmm(start)} to {_hhmm(end)})"
            )
            outcomes = [_gap_outcome(cron, hit, runs) for hit in hits]
        else:
            what = (
                f"{labels} {'happen' if plural else 'happens'} twice in {zone.key} (the "
                f"clocks go back from {_hhmm(end)} to {_hhmm(start)})"
            )
            outcomes = [_repeat_outcome(hit, runs) for hit in hits]
        sentences.append(f"{hits[0].local:%a %Y-%m-%d}: {what}; beat {_grouped(outcomes)}")
    return sentences


def dst_warning(
    schedule, now: datetime, days: int = DAYS, subject: str = "This crontab"
) -> str | None:
    """The one-line warning for a crontab that meets a change of offset within `days`,
    or None."""
    problems = dst_problems(schedule, now, days)
    if not problems:
        return None
    return (
        f"{subject} meets a daylight saving time change within {days} days: "
        + "; ".join(describe(schedule, problems))
        + "."
    )
