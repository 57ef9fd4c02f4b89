"""Hostile and malformed input, generated with hypothesis: CLI flags, task kwargs as an
admin could type them into a schedule, and import files. Always a clear error, never a
traceback, never a change to game data. The example counts are the README's numbers."""

import json
import os
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry
from chronicles.testdata.generator import Options, generate
from maintenance import operations
from maintenance.operations.base import ParameterError
from maintenance.tasks import OPERATION_TASKS
from maintenance.transfer.format import header_line
from tests.factories import task_summary

pytestmark = pytest.mark.django_db
CLI_EXAMPLES = 300
KWARGS_EXAMPLES = 300
FILE_EXAMPLES = 150
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # CI runs the same examples every time; a developer's run explores new ones.
    derandomize=os.environ.get("CI") == "true",
    database=None,
)


def game_data():
    models = (get_user_model(), Chronicle, Character, XPEntry, Scene, Post)
    return {model.__name__: list(model.objects.order_by("pk").values_list()) for model in models}


@pytest.fixture
def data():
    generate(Options(seed=13, chronicles=2, characters=12, scenes=30, defect_rate=0.1))
    return game_data()


def one_clear_line(error):
    text = str(error)
    return text and "\n" not in text and "Traceback" not in text


NAMES = [op.name for op in operations.all_operations()]
FLAGS = sorted(
    {p.flag for op in operations.all_operations() for p in op.parameters}
    | {"--batch-size", "--dry-run", "--json", "--wait", "--fail-on-findings", "--no-input", "-v"}
)
token = st.one_of(
    st.sampled_from(FLAGS),
    st.sampled_from(["0", "-1", "1e9", "abc", "", " ", "a,b", "character_xp_mismatch", "99999"]),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.text(max_size=12).filter(lambda t: t not in ("-h", "--help") and "\x00" not in t),
)


@settings(HYPOTHESIS, max_examples=CLI_EXAMPLES)
@given(
    operation=st.one_of(st.sampled_from(NAMES), st.text(max_size=10)),
    args=st.lists(token, max_size=6),
)
def test_cli_flags(data, operation, args):
    if operation.startswith("-") or operation in ("-h", "--help") or "\x00" in operation:
        operation = "x" + operation
    try:
        call_command(
            "run_maintenance",
            operation,
            *args,
            "--inline",
            "--dry-run",
            "--no-input",
            stdout=StringIO(),
            stderr=StringIO(),
        )
    except CommandError as error:
        assert error.returncode in (1, 2, 3)
        assert one_clear_line(error)
    assert game_data() == data


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
parameter_names = st.sampled_from(
    sorted({p.name for op in operations.all_operations() for p in op.parameters})
    + ["batch_size", "dry_run", "partitions", "partition", "run_id"]
)
kwargs_strategy = st.dictionaries(
    st.one_of(parameter_names, st.text(max_size=10)), json_value, max_size=5
)


@settings(HYPOTHESIS, max_examples=KWARGS_EXAMPLES)
@given(operation=st.sampled_from(NAMES), kwargs=kwargs_strategy)
def test_task_kwargs_typed_into_a_schedule(data, operation, kwargs):
    kwargs = json.loads(json.dumps(kwargs))  # exactly what a schedule's JSON can hold
    if kwargs.get("dry_run") is None or kwargs.get("dry_run") is False:
        # null means the default (a real run); a valid real run may change data, and
        # that is not the point here
        kwargs["dry_run"] = True

    result = task_summary(
        OPERATION_TASKS[operation].apply(
            kwargs=kwargs, headers={"periodic_task_name": "typed by an admin"}
        )
    )

    # A valid partitioned run is not run by this message: it sends one per partition.
    assert result["status"] in ("failed", "succeeded", "skipped", "queued")
    if result["status"] == "queued":
        assert len(result["partitions"]) == kwargs["partitions"] > 1
    if result["status"] == "failed":
        assert one_clear_line(result["error"])
    try:
        operations.get(operation).clean({k: v for k, v in kwargs.items() if k != "run_id"})
        valid = "run_id" not in kwargs
    except ParameterError:
        valid = False
    if not valid:
        assert result["status"] == "failed"
    assert game_data() == data


GOOD_RECORD = {
    "external_id": "6f1c2a3e-4b5d-4e6f-8a9b-0c1d2e3f4a5b",
    "name": "Adelaide Crane",
    "owner": None,
    "chronicle": None,
    "status": "App",
    "npc": False,
    "xp": 1,
    "willpower": 5,
    "temporary_willpower": 3,
    "age": None,
    "created_at": "2025-01-02T03:04:05+00:00",
    "ledger": [
        {"amount": 1, "kind": "story", "created_at": "2025-02-01T00:00:00+00:00", "note": ""}
    ],
}
mutated_record = st.builds(
    lambda key, value, drop: json.dumps(
        {k: v for k, v in {**GOOD_RECORD, key: value}.items() if k != drop}
    ),
    st.sampled_from(sorted(GOOD_RECORD) + ["extra"]),
    json_value,
    st.sampled_from(sorted(GOOD_RECORD) + [None]),
)
line_strategy = st.one_of(
    mutated_record.map(str.encode),
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    st.text(max_size=60).filter(lambda t: "\n" not in t and "\r" not in t).map(str.encode),
    json_value.map(lambda v: json.dumps(v).encode()),
)
header_strategy = st.one_of(
    st.just(header_line().encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)


@settings(HYPOTHESIS, max_examples=FILE_EXAMPLES)
@given(header=header_strategy, lines=st.lists(line_strategy, max_size=8))
def test_import_files(data, tmp_path_factory, header, lines):
    path = tmp_path_factory.mktemp("hostile") / "characters.jsonl"
    path.write_bytes(b"\n".join([header, *lines]) + b"\n")
    out = StringIO()
    try:
        call_command("import_characters", str(path), "--dry-run", "--json", stdout=out)
    except CommandError as error:
        assert error.returncode == 2 and one_clear_line(error)
        assert header != header_line().encode()
    else:
        summary = json.loads(out.getvalue())
        assert summary["status"] == "succeeded"
        reported = len(summary["bad_lines"]) + summary["changed"]
        unchanged = summary["processed"] - reported
        assert unchanged >= 0
        assert all(one_clear_line(bad["reason"]) for bad in summary["bad_lines"])
    assert game_data() == data
