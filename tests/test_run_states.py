"""The run's state machine: the table of DESIGN.md "Run states and operator control",
each transition one conditional UPDATE, and nothing else in the code writing `status`."""

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maintenance.engine.states import AT_REST, FINISHED, TRANSITIONS, Status
from maintenance.models import MaintenanceRun
from tests.test_hostile_input import HYPOTHESIS

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def a_run(status, token="held"):
    return MaintenanceRun.objects.create(
        operation="archive_old_scenes",
        trigger=MaintenanceRun.Trigger.CLI,
        status=status,  # test set-up: the state to start from
        lease_token=token,
    )


@settings(HYPOTHESIS, max_examples=150)
@given(
    status=st.sampled_from(Status.values),
    transition=st.sampled_from(sorted(TRANSITIONS)),
    right_token=st.booleans(),
)
def test_a_transition_moves_exactly_the_statuses_of_the_table(status, transition, right_token):
    MaintenanceRun.objects.all().delete()
    run = a_run(status)
    token = "held" if right_token else "someone-else"

    moved = MaintenanceRun.objects.filter(pk=run.pk).transition(transition, token=token)

    run.refresh_from_db()
    expected = TRANSITIONS[transition].get(status) if right_token else None
    if expected is None:
        assert moved == 0 and run.status == status and run.finished_at is None
        assert run.lease_token == "held"
        return
    assert moved == 1 and run.status == expected
    assert (run.finished_at is not None) == (expected in FINISHED)
    assert (run.lease_token == "") == (expected in AT_REST)


def test_operator_transitions_report_whether_they_won():
    run = a_run(Status.RUNNING)
    runs = MaintenanceRun.objects.filter(pk=run.pk)

    assert runs.pause() == 1  # running -> pausing: the runner stops at its next batch
    assert runs.pause() == 0  # pausing is not pausable again
    assert runs.cancel() == 1  # pausing -> cancelling
    assert runs.resume() == 0  # nothing to resume while a runner still works
    run.refresh_from_db()
    assert run.status == Status.CANCELLING and run.lease_token == "held"


def test_every_status_has_a_way_out_unless_it_is_finished():
    sources = {source for moves in TRANSITIONS.values() for source in moves}
    # A failed run leaves only by "retry": its failed partitions are resumed alone.
    assert set(Status.values) - sources == set(FINISHED) - {Status.FAILED}
    leaving_failed = [name for name, moves in TRANSITIONS.items() if Status.FAILED in moves]
    assert leaving_failed == ["retry"]


# --- nothing but the transitions writes `status` ---


def _status_writes(path):
    """(line, what) for each place in `path` that writes a run's status directly."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        writes = ("update", "create", "get_or_create", "update_or_create")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in writes
            and any(keyword.arg == "status" for keyword in node.keywords)
        ):
            found.append((node.lineno, f".{node.func.attr}(status=...)"))
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append((node.lineno, ".status = ..."))
    return sorted(found)


def test_nothing_outside_the_state_machine_writes_a_run_status():
    owner = ROOT / "maintenance" / "engine" / "states.py"
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in sorted((ROOT / "maintenance").rglob("*.py"))
        if path != owner and "migrations" not in path.parts
        for line, what in _status_writes(path)
    ]
    assert offenders == []


def test_the_check_finds_a_direct_write(tmp_path):
    # The check above must be able to fail.
    sample = tmp_path / "sample.py"
    sample.write_text("Run.objects.filter(pk=1).update(status='failed')\nrun.status = 'x'\n")
    assert [what for _, what in _status_writes(sample)] == [".update(status=...)", ".status = ..."]
