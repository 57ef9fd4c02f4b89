"""The worker's own time limits, whatever a message carries.

Celery lets the sender decide: Task.apply_async writes the sender's soft and hard limits
(its own task_*_time_limit settings) into the message's `timelimit` header, and the
worker's Request prefers them to its own. So limits set on the worker had no effect, and
a sender whose soft limit was above its hard one could not enqueue at all. Here:

- the app's tasks take no time limits from the configuration, so senders put none in
  their messages (WorkerLimitsTask);
- the worker runs every task under its own limits, never the message's
  (WorkerLimitsRequest);
- a worker refuses to start, with one line, unless its slice, soft limit, hard limit and
  the broker's visibility timeout come in that order (celeryd_init, worker_init).

Nothing here imports the `worker` package at module level: worker/celery.py imports this
module while that package is still loading.
"""

import logging
import math
from dataclasses import dataclass

from celery import Task
from celery.signals import celeryd_after_setup, celeryd_init, worker_init
from celery.worker.request import Request
from django.conf import settings

SOFT_FLAG = "--soft-time-limit"
HARD_FLAG = "--time-limit"
SOFT_VARIABLE = "CELERY_TASK_SOFT_TIME_LIMIT"
HARD_VARIABLE = "CELERY_TASK_TIME_LIMIT"
SLICE_VARIABLE = "MAINTENANCE_SLICE_SECONDS"
logger = logging.getLogger(__name__)

# Celery's (hard, soft) pair, in Celery's order; None is no limit.
Pair = tuple[float | None, float | None]


@dataclass(frozen=True)
class Limit:
    """One limit and where it came from: a worker flag or a variable."""

    seconds: float | None
    name: str

    def __str__(self) -> str:
        shown = "unset" if self.seconds is None else f"{self.seconds:g}"
        return f"{self.name} ({shown})"


@dataclass(frozen=True)
class WorkerLimits:
    soft: Limit
    hard: Limit

    def pair(self) -> Pair:
        return self.hard.seconds, self.soft.seconds


# The limits the worker in this process validated at start-up (None: no worker here).
_applied: WorkerLimits | None = None


def applied(app) -> Pair:
    """The (hard, soft) limits tasks run under in this process: the worker's, else the
    app's settings (a process that is not a started worker)."""
    if _applied is not None:
        return _applied.pair()
    return app.conf.task_time_limit, app.conf.task_soft_time_limit


class WorkerLimitsRequest(Request):
    """A task request that runs under the worker's time limits, never the message's."""

    @property
    def time_limits(self) -> Pair:
        return applied(self._app)

    @time_limits.setter
    def time_limits(self, sent) -> None:
        # Request.__init__ stores the message's `timelimit` header here. Those are the
        # sender's limits (its settings, beat's, an old release's): kept to be seen in a
        # debugger, never applied.
        self.sent_time_limits = tuple(sent)


class WorkerLimitsTask(Task):
    """The app's task class: runs under the worker's limits, sends none."""

    Request = WorkerLimitsRequest
    # The time limits are left out: Task.bind would copy the sender's task_*_time_limit
    # onto each task, and apply_async write them into every message (and refuse to send
    # at all when soft > hard).
    from_config = tuple(
        (attribute, setting)
        for attribute, setting in Task.from_config
        if attribute not in ("time_limit", "soft_time_limit")
    )


def _source(options: dict, option: str, flag: str, variable: str) -> str:
    return flag if options.get(option) is not None else variable


def of_worker(worker) -> WorkerLimits:
    """The limits a started worker resolved for its pool: a flag where one was given
    (the worker's options), else its settings."""
    options = getattr(worker, "options", None) or {}
    return WorkerLimits(
        soft=Limit(
            worker.soft_time_limit,
            _source(options, "soft_time_limit", SOFT_FLAG, SOFT_VARIABLE),
        ),
        hard=Limit(worker.time_limit, _source(options, "time_limit", HARD_FLAG, HARD_VARIABLE)),
    )


def of_options(options: dict, conf) -> WorkerLimits:
    """The limits `celery worker` is about to resolve: its flags, else its settings."""

    def limit(option: str, setting: str, flag: str, variable: str) -> Limit:
        given = options.get(option)
        if given is None:
            return Limit(conf[setting], variable)
        return Limit(given, flag)

    return WorkerLimits(
        soft=limit("soft_time_limit", "task_soft_time_limit", SOFT_FLAG, SOFT_VARIABLE),
        hard=limit("time_limit", "task_time_limit", HARD_FLAG, HARD_VARIABLE),
    )


def _finite(limit: Limit) -> bool:
    return limit.seconds is not None and math.isfinite(limit.seconds)


def order_problem(
    limits: WorkerLimits, slice_seconds: float, visibility_timeout: float | None
) -> tuple[str, str] | None:
    """(name, problem) when the limits are out of order, else None. A run gives its
    process back at the end of its slice, before the soft limit asks it to stop (it can
    still save its checkpoint), before the hard limit kills it, before Redis delivers
    its message a second time."""
    soft, hard = limits.soft, limits.hard
    visibility = "none" if visibility_timeout is None else f"{visibility_timeout:g}"
    order = (
        f"a worker needs {SLICE_VARIABLE} ({slice_seconds:g}) < {soft} < {hard} "
        f"< the broker's visibility timeout ({visibility}, {HARD_VARIABLE} + 600)"
    )
    for limit in (soft, hard):
        if not _finite(limit):
            return limit.name, f"must be a finite number of seconds; {order}"
    if not soft.seconds < hard.seconds:
        return soft.name, f"must be below {hard.name}; {order}"
    if not slice_seconds < soft.seconds:
        return soft.name, f"must be above {SLICE_VARIABLE} (a slice ends first); {order}"
    if visibility_timeout is not None and not hard.seconds < visibility_timeout:
        return hard.name, f"must be below the broker's visibility timeout; {order}"
    return None


def _visibility_timeout(conf) -> float | None:
    options = conf.broker_transport_options or {}
    return options.get("visibility_timeout")


def check_and_apply(limits: WorkerLimits, conf) -> None:
    """Run this process's tasks under `limits`, or end it with one line (no traceback)
    when they are out of order."""
    global _applied
    problem = order_problem(limits, settings.MAINTENANCE_SLICE_SECONDS, _visibility_timeout(conf))
    if problem is not None:
        from worker.env import SettingError, exit_with  # see the module's docstring

        exit_with(SettingError(*problem))
    _applied = limits


@celeryd_init.connect
def _before_the_worker_program_starts(sender=None, conf=None, options=None, **kwargs) -> None:
    # `celery worker`: as early as possible, before Celery prints anything of its own.
    check_and_apply(of_options(options or {}, conf), conf)


@worker_init.connect
def _when_a_worker_starts(sender, **kwargs) -> None:
    # Any worker (also one embedded in a process): what its pool really uses.
    check_and_apply(of_worker(sender), sender.app.conf)


@celeryd_after_setup.connect
def _say_which_limits(sender=None, **kwargs) -> None:
    # Once logging is set up: which limits this worker applies, and where they came from.
    if _applied is not None:
        soft, hard = _applied.soft, _applied.hard
        logger.info(
            "%s runs tasks under its own time limits: soft %gs (%s), hard %gs (%s); "
            "a run gives its process back after %gs (%s)",
            sender,
            soft.seconds,
            soft.name,
            hard.seconds,
            hard.name,
            settings.MAINTENANCE_SLICE_SECONDS,
            SLICE_VARIABLE,
        )
