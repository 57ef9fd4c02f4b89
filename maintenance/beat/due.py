"""When a schedule was due: the same answer in every beat process, so two beats (or one
restarted) name a due time alike and it is sent once."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from celery.schedules import crontab, schedule, solar

# A crontab limited to a rare day (29 February, a weekday in one month) fires within
# this many days back, or is treated as not due.
LOOK_BACK_DAYS = 8 * 366


def _fires_on(cron: crontab, day: date) -> bool:
    # celery numbers weekdays from Sunday = 0; both day fields must match.
    return (
        day.month in cron.month_of_year
        and day.day in cron.day_of_month
        and day.isoweekday() % 7 in cron.day_of_week
    )


def last_fire(cron: crontab, now: datetime) -> datetime | None:
    """The latest time at or before `now` at which `cron` fires, in its own zone."""
    zone = getattr(cron, "tz", None) or now.tzinfo
    local_now = now.astimezone(zone)
    times = sorted(((h, m) for h in cron.hour for m in cron.minute), reverse=True)
    for back in range(LOOK_BACK_DAYS):
        day = local_now.date() - timedelta(days=back)
        if not _fires_on(cron, day):
            continue
        for hour, minute in times:
            fire = datetime.combine(day, time(hour, minute), tzinfo=zone)
            if fire <= local_now:
                return fire.astimezone(now.tzinfo)
    return None


def due_time(entry_schedule, now: datetime, last_sent: datetime | None) -> datetime | None:
    """The due time a beat that finds `entry_schedule` due at `now` would send, or None
    when the last one sent (by any beat) is not an interval ago yet.

    A crontab: its latest fire time. A clocked schedule: its time. An interval: one
    interval after the last due time sent, or now when none was sent or that is more
    than an interval ago. A solar event: now, to the minute (beat finds it due within
    seconds of the event; two beats agree unless a minute turns between them)."""
    if isinstance(entry_schedule, crontab):
        fire = last_fire(entry_schedule, now)
        if fire is not None:
            return fire
    elif isinstance(getattr(entry_schedule, "clocked_time", None), datetime):
        return entry_schedule.clocked_time
    elif isinstance(entry_schedule, solar):
        return now.replace(second=0, microsecond=0)
    elif isinstance(entry_schedule, schedule) and last_sent is not None:
        following = last_sent + entry_schedule.run_every
        if now + tolerance(entry_schedule) < following:
            return None
        if now < following + entry_schedule.run_every:
            return following
    return now.replace(microsecond=0)


def tolerance(entry_schedule) -> timedelta:
    """How early an interval may be found due: beat stamps its own clock when it sends,
    a little before the due time recorded."""
    every = getattr(entry_schedule, "run_every", None)
    if isinstance(every, timedelta):
        return min(every / 2, timedelta(seconds=5))
    return timedelta(0)
