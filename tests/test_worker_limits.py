"""Time limits belong to the worker (maintenance/worker_limits.py): a task runs under the
worker's soft and hard limits whatever its message carries, senders put none in their
messages, and a worker whose slice, limits and visibility timeout are out of order
refuses to start with one line. Messages go through kombu's in-memory transport, so no
broker is needed; the worker start-ups are real `celery worker` processes."""

import os
import signal
import subprocess
import sys
import time
from unittest.mock import Mock

import pytest
from celery import Celery, current_app
from celery.utils.imports import symbol_by_name
from celery.worker.request import Request, create_request_cls
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kombu import Connection

from maintenance import worker_limits
from maintenance.engine.enqueue import enqueue
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun
from maintenance.worker_limits import (
    HARD_FLAG,
    HARD_VARIABLE,
    SLICE_VARIABLE,
    SOFT_FLAG,
    SOFT_VARIABLE,
    Limit,
    WorkerLimits,
    WorkerLimitsRequest,
    WorkerLimitsTask,
)
from tests.properties import HYPOTHESIS
from tests.services import ROOT

TASK = "maintenance.archive_old_scenes"
DAY = 24 * 3600
ORDER_EXAMPLES = 40
WORKER_LIMITS = WorkerLimits(soft=Limit(3, SOFT_VARIABLE), hard=Limit(10, HARD_VARIABLE))


# --- messages and requests -------------------------------------------------------


@pytest.fixture
def memory_queue():
    """A connection to kombu's in-memory transport with the maintenance queue declared,
    and a function returning the next message as the worker receives it."""
    with Connection("memory://") as connection:
        queue = connection.SimpleQueue(current_app.conf.task_default_queue)
        queue.clear()
        yield connection, lambda: queue.get(timeout=1)
        queue.clear()
        queue.close()


def send(connection, **limits):
    current_app.tasks[TASK].apply_async(
        kwargs={"run_id": 1}, connection=connection, ignore_result=True, retry=False, **limits
    )


def pool_limits(request_class, message, task_name: str = TASK) -> tuple:
    """The (hard, soft) limits a worker's pool is given for `message`, both through
    Celery's fast request class (what the worker uses) and the plain one."""
    task = current_app.tasks[task_name]
    seen = set()
    for fast in (True, False):
        pool = Mock()
        cls = (
            create_request_cls(request_class, task, pool, "test-worker", None, app=current_app)
            if fast
            else request_class
        )
        cls(message, app=current_app, task=task, hostname="test-worker").execute_using_pool(pool)
        given = pool.apply_async.call_args.kwargs
        seen.add((given["timeout"], given["soft_timeout"]))
    assert len(seen) == 1, seen
    return seen.pop()


def test_the_app_tasks_carry_no_limits_and_run_under_the_workers():
    tasks = {name: task for name, task in current_app.tasks.items() if name.startswith("maint")}
    assert TASK in tasks and "maintenance.heartbeat" in tasks
    for name, task in tasks.items():
        assert isinstance(task, WorkerLimitsTask), name
        assert (task.time_limit, task.soft_time_limit) == (None, None), name
        assert symbol_by_name(task.Request) is WorkerLimitsRequest, name


def test_a_message_sent_with_its_own_limits_runs_under_the_workers(memory_queue, monkeypatch):
    connection, received = memory_queue
    send(connection, time_limit=2, soft_time_limit=1)
    message = received()
    assert message.headers["timelimit"] == [2, 1]  # what a sender may still put there
    # Plain Celery would let the message win ...
    assert pool_limits(Request, message) == (2, 1)
    # ... the worker applies its own: those it validated at start-up,
    monkeypatch.setattr(worker_limits, "_applied", WORKER_LIMITS)
    assert pool_limits(WorkerLimitsRequest, message) == (10, 3)
    # ... or, in a process that started no worker, the settings.
    monkeypatch.setattr(worker_limits, "_applied", None)
    conf = current_app.conf
    assert pool_limits(WorkerLimitsRequest, message) == (
        conf.task_time_limit,
        conf.task_soft_time_limit,
    )


def test_a_message_without_limits_runs_under_the_workers_too(memory_queue, monkeypatch):
    connection, received = memory_queue
    send(connection)
    message = received()
    assert message.headers["timelimit"] == [None, None]
    monkeypatch.setattr(worker_limits, "_applied", WORKER_LIMITS)
    assert pool_limits(WorkerLimitsRequest, message) == (10, 3)


@pytest.mark.django_db
def test_enqueue_puts_no_limits_in_the_message(memory_queue):
    _, received = memory_queue
    run = create_run(TASK.split(".")[1], {}, trigger=MaintenanceRun.Trigger.CLI)
    enqueue(run, Connection("memory://"))  # a connection of its own: enqueue closes it
    message = received()
    assert message.payload[1] == {"run_id": run.pk}
    assert message.headers["timelimit"] == [None, None]


def test_a_sender_whose_settings_are_out_of_order_still_sends():
    """Celery refuses to send a task whose soft limit is above its hard one; the app's
    tasks take neither from the settings, so such settings cannot stop an enqueue."""

    def noop() -> None:
        pass

    def sent_by(task_cls):
        odd = Celery("odd", task_cls=task_cls, set_as_current=False)
        odd.conf.update(task_soft_time_limit=50, task_time_limit=10, broker_url="memory://")
        task = odd.task(name="odd.noop", shared=False)(noop)
        with Connection("memory://") as connection:
            queue = connection.SimpleQueue("odd")
            try:
                task.apply_async(queue="odd", connection=connection, ignore_result=True)
                return queue.get(timeout=1).headers["timelimit"]
            finally:
                queue.close()

    with pytest.raises(ValueError, match="soft_time_limit must be less"):
        sent_by("celery.app.task:Task")  # what the settings did to every enqueue before
    assert sent_by(WorkerLimitsTask) == [None, None]


# --- the order slice < soft < hard < visibility timeout ---------------------------


def limits(soft: float, hard: float, soft_name=SOFT_VARIABLE, hard_name=HARD_VARIABLE):
    return WorkerLimits(soft=Limit(soft, soft_name), hard=Limit(hard, hard_name))


@pytest.mark.parametrize(
    ("soft", "hard", "named"),
    [
        (100, 50, SOFT_FLAG),  # soft above hard
        (300, 300, SOFT_FLAG),  # soft at hard
        (200, 3600, SOFT_FLAG),  # soft below the slice (300)
        (3300, 4200, HARD_FLAG),  # hard at the visibility timeout
        (float("nan"), 3600, SOFT_FLAG),
        (3300, float("inf"), HARD_FLAG),
        (None, 3600, SOFT_FLAG),
    ],
)
def test_limits_out_of_order_are_a_problem_naming_both_and_the_slice(soft, hard, named):
    found = worker_limits.order_problem(limits(soft, hard, SOFT_FLAG, HARD_FLAG), 300, 4200)
    assert found is not None
    name, problem = found
    assert name == named
    line = f"{name}: {problem}"
    assert "\n" not in line
    for mentioned in (SOFT_FLAG, HARD_FLAG, SLICE_VARIABLE, "visibility timeout"):
        assert mentioned in line


def test_limits_in_order_are_no_problem():
    assert worker_limits.order_problem(limits(3, 10), 1, 4200) is None
    assert worker_limits.order_problem(limits(3300, 3600), 300, None) is None


def test_flags_win_over_the_settings_and_are_named_as_flags():
    conf = {"task_soft_time_limit": 3300, "task_time_limit": 3600}
    given = worker_limits.of_options({"soft_time_limit": 5.0, "time_limit": None}, conf)
    assert given == limits(5.0, 3600, SOFT_FLAG, HARD_VARIABLE)
    assert worker_limits.of_options({}, conf) == limits(3300, 3600)


# --- a real `celery worker` starting -----------------------------------------------


def clean_env(**env: str) -> dict:
    """This environment without the test run's settings, plus `env`: an SQLite file,
    the in-memory broker (nothing is ever sent)."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CELERY_", "MAINTENANCE_"))
        and k not in ("DATABASE_URL", "TIME_ZONE", "LOG_LEVEL")
    }
    return {
        **kept,
        "DJANGO_SETTINGS_MODULE": "worker.settings",
        "DATABASE_URL": "sqlite://:memory:",
        "CELERY_BROKER_URL": "memory://",
        "CELERY_RESULT_BACKEND": "cache+memory://",
        **env,
    }


WORKER = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo"]


def start_worker(flags: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*WORKER, *flags],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(result, *names: str) -> str:
    """Exit 1 (worker/env.py exit_with), exactly one line on stderr naming `names`."""
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith("configuration error: ")
    for name in names:
        assert name in result.stderr, (name, result.stderr)
    return result.stderr


@pytest.mark.parametrize(
    ("flags", "env", "names"),
    [
        (["--soft-time-limit", "100", "--time-limit", "50"], {}, [SOFT_FLAG, HARD_FLAG]),
        (["--soft-time-limit", "200"], {}, [SOFT_FLAG, HARD_VARIABLE]),
        (["--time-limit", "99999"], {}, [SOFT_VARIABLE, HARD_FLAG, "visibility timeout"]),
        (["--soft-time-limit", "nan"], {}, [SOFT_FLAG, HARD_VARIABLE]),
        (
            ["--time-limit", "15"],
            {SOFT_VARIABLE: "20", HARD_VARIABLE: "30", SLICE_VARIABLE: "10"},
            [SOFT_VARIABLE, HARD_FLAG],
        ),
        (
            ["--soft-time-limit", "5", "--time-limit", "60"],
            {SLICE_VARIABLE: "10"},
            [SOFT_FLAG, HARD_FLAG],
        ),
        ([], {SOFT_VARIABLE: "3600", HARD_VARIABLE: "3000"}, [SOFT_VARIABLE, HARD_VARIABLE]),
        ([], {SLICE_VARIABLE: "4000"}, [SOFT_VARIABLE, HARD_VARIABLE]),
    ],
)
def test_a_worker_with_limits_out_of_order_refuses_to_start_with_one_line(flags, env, names):
    line = assert_refused(start_worker(flags, **env), *names, SLICE_VARIABLE)
    assert "ready" not in line


def test_a_worker_with_limits_in_order_starts_under_its_flags(tmp_path):
    log = tmp_path / "worker.log"
    with open(log, "w") as output:
        worker = subprocess.Popen(
            [*WORKER, "--soft-time-limit", "3", "--time-limit", "10", "--loglevel", "INFO"],
            cwd=ROOT,
            env=clean_env(**{SLICE_VARIABLE: "1"}),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while "ready." not in log.read_text() and worker.poll() is None:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
    shown = log.read_text()
    assert "ready." in shown, shown
    assert "soft 3s (--soft-time-limit), hard 10s (--time-limit)" in shown, shown
    assert "after 1s (MAINTENANCE_SLICE_SECONDS)" in shown, shown
    assert "configuration error" not in shown


# --- the settings: any slice, soft and hard limit load or are one line ----------------

SETTINGS = [SLICE_VARIABLE, SOFT_VARIABLE, HARD_VARIABLE]
DEFAULTS = {SLICE_VARIABLE: 300, SOFT_VARIABLE: 3300, HARD_VARIABLE: 3600}
# In the order worker/settings.py reads them: the first out of range is the one named.
READ_ORDER = [SOFT_VARIABLE, HARD_VARIABLE, SLICE_VARIABLE]

seconds = st.one_of(
    st.none(),  # unset: the default
    st.integers(1, 60),
    st.integers(250, 4000),
    st.sampled_from([300, 3300, 3600, 7 * DAY]),
    st.sampled_from([0, -5, 7 * DAY + 1]),  # out of range
)


def expected_names(values: dict) -> list[str] | None:
    """The variables the one line must name, or None when the settings load."""
    for name in READ_ORDER:
        value = values[name]
        if value is not None and not 1 <= value <= 7 * DAY:
            return [name]
    chosen = {name: DEFAULTS[name] if values[name] is None else values[name] for name in SETTINGS}
    if chosen[SOFT_VARIABLE] >= chosen[HARD_VARIABLE]:
        return [SOFT_VARIABLE, HARD_VARIABLE, SLICE_VARIABLE]
    if chosen[SLICE_VARIABLE] >= chosen[SOFT_VARIABLE]:
        return [SLICE_VARIABLE, SOFT_VARIABLE, HARD_VARIABLE]
    return None


@hypothesis_settings(HYPOTHESIS, max_examples=ORDER_EXAMPLES)
@given(values=st.fixed_dictionaries({name: seconds for name in SETTINGS}))
def test_any_slice_and_limits_load_or_are_one_line_naming_them(values):
    env = {name: str(value) for name, value in values.items() if value is not None}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = expected_names(values)
    if names is None:
        assert result.returncode == 0 and result.stderr == "", result.stderr
    else:
        assert_refused(result, *names)
        assert result.stderr.startswith(f"configuration error: {names[0]}: ")
