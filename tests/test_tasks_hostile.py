"""Hostile task input, generated with hypothesis: positional args, kwargs that are not a
JSON object, NUL characters, nesting thousands of levels deep, 100 KB texts and huge
numbers, sent the way beat sends them (Task.apply with beat's headers) and stored in a
schedule that django-celery-beat's scheduler entry reads. Always exactly one failed run
with a one-line error of at most 2,000 characters; nothing escapes the task; no game
data changes; the schedule is never disabled behind anyone's back."""

import json
import os

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chronicles.testdata.generator import Options, generate
from maintenance import operations
from maintenance.engine.runs import ERROR_LIMIT
from maintenance.models import MaintenanceRun
from maintenance.tasks import OPERATION_TASKS
from tests.test_hostile_input import game_data
from worker.celery import app

pytestmark = pytest.mark.django_db
TASK_EXAMPLES = 120
ENTRY_EXAMPLES = 80
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
NAMES = [op.name for op in operations.all_operations()]
BEAT_HEADERS = {"periodic_task_name": "hostile schedule"}


@pytest.fixture
def data():
    generate(Options(seed=31, chronicles=1, characters=6, scenes=12, defect_rate=0.2))
    return game_data()


def nested(depth: int, leaf, as_dict: bool):
    """`depth` levels of lists or dicts, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
nul_text = st.builds(lambda a, b: f"{a}\x00{b}", text, text)
huge_text = st.integers(100_000, 150_000).map(lambda n: "x" * n)
deep = st.builds(nested, st.integers(1_000, 50_000), st.just(1), st.booleans())
huge_int = st.one_of(st.integers(2**63, 2**200), st.integers(-(2**200), -(2**63)))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text, nul_text, huge_int)
json_value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
poison = st.one_of(nul_text, huge_text, deep, huge_int, st.floats(allow_nan=True), json_value)
# One entry that no operation accepts: an unknown name, a NUL in the name, or a known
# name with a hostile value.
poison_item = st.one_of(
    st.tuples(st.sampled_from(["dry_run", "batch_size", "older_than_days", "rules"]), poison),
    st.tuples(nul_text, json_value),
    st.tuples(text.map(lambda t: f"unknown_{t}"), poison),
)


def assert_one_failed_run(before_ids, result):
    runs = list(MaintenanceRun.objects.exclude(pk__in=before_ids))
    assert len(runs) == 1, runs
    run = runs[0]
    assert run.status == MaintenanceRun.Status.FAILED
    assert run.error and "\n" not in run.error and len(run.error) <= ERROR_LIMIT
    json.dumps(run.params)  # what was stored reads back as plain JSON
    # The run failed, so the task is a FAILURE too (as Flower shows it), carrying the run.
    assert result.failed() and result.result.summary["run_id"] == run.pk
    return run


@settings(HYPOTHESIS, max_examples=TASK_EXAMPLES)
@given(
    operation=st.sampled_from(NAMES),
    args=st.one_of(st.just([]), st.lists(poison, min_size=1, max_size=2)),
    extra=st.dictionaries(text, json_value, max_size=2),
    bad=poison_item,
)
def test_a_beat_message_with_hostile_input_is_one_failed_run(data, operation, args, extra, bad):
    kwargs = {**extra, bad[0]: bad[1]}
    before = list(MaintenanceRun.objects.values_list("pk", flat=True))

    result = OPERATION_TASKS[operation].apply(args=args, kwargs=kwargs, headers=BEAT_HEADERS)

    run = assert_one_failed_run(before, result)
    assert (run.trigger, run.periodic_task_name) == ("beat", "hostile schedule")
    assert game_data() == data


def deep_text(depth: int, as_dict: bool) -> str:
    return ('{"a":' * depth + "1" + "}" * depth) if as_dict else "[" * depth + "]" * depth


stored_text = st.one_of(
    text.filter(lambda t: "\x00" not in t),  # mostly not JSON at all
    st.builds(deep_text, st.integers(1_000, 50_000), st.booleans()),
    st.integers(5_000, 6_000).map(lambda n: "9" * n),  # past Python's int-digit limit
    st.builds(lambda n: json.dumps({"older_than_days": "y" * n}), st.integers(100_000, 120_000)),
    json_value.map(json.dumps),  # NUL arrives escaped: \u0000
    json_value.map(lambda v: json.dumps(v, ensure_ascii=False).replace("\x00", "\\u0000")),
)


def usable(operation: str, args_text: str, kwargs_text: str, headers_text: str) -> bool:
    """Whether the texts happen to be a valid schedule (then a run would really start)."""
    try:
        args, kwargs = json.loads(args_text or "[]"), json.loads(kwargs_text or "{}")
        headers = json.loads(headers_text or "{}")
        operations.get(operation).clean(kwargs)
    except (ValueError, RecursionError, TypeError):
        return False
    return args == [] and isinstance(kwargs, dict) and isinstance(headers, dict)


@settings(HYPOTHESIS, max_examples=ENTRY_EXAMPLES)
@given(
    operation=st.sampled_from(NAMES),
    args_text=st.one_of(st.just("[]"), st.just(""), stored_text),
    kwargs_text=stored_text,
    headers_text=st.one_of(st.just("{}"), stored_text.filter(bool)),  # the column is NOT NULL
)
def test_a_schedule_with_hostile_text_is_one_failed_run_not_a_disabled_schedule(
    data, beat_scheduler, operation, args_text, kwargs_text, headers_text
):
    assume(not usable(operation, args_text, kwargs_text, headers_text))
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    schedule = PeriodicTask.objects.create(
        name="hostile schedule",
        task=f"maintenance.{operation}",
        interval=every_minute,
        args=args_text,
        kwargs=kwargs_text,
        headers=headers_text,
    )
    before = list(MaintenanceRun.objects.values_list("pk", flat=True))

    # What beat does: read every enabled row into an entry, then send the entry.
    entry = beat_scheduler(lazy=True).all_as_schedule()["hostile schedule"]
    result = app.tasks[entry.task].apply(
        args=entry.args, kwargs=entry.kwargs, headers=entry.options["headers"]
    )

    run = assert_one_failed_run(before, result)
    assert run.periodic_task_name == "hostile schedule"
    schedule.refresh_from_db()
    assert schedule.enabled and (schedule.args, schedule.kwargs) == (args_text, kwargs_text)
    assert game_data() == data
    schedule.delete()
