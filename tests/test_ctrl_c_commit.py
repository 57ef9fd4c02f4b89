"""A Ctrl-C that lands while a transaction commits. Django's atomic() then tries to put
the connection back in autocommit while the COMMIT is still under way, and the database
error it raises used to hide the KeyboardInterrupt: an inline run was recorded failed
("can't change 'autocommit' now") instead of paused. Real SIGINTs, delivered at each
commit of a run in turn, just before and just after it; SQLite and PostgreSQL."""

import contextlib
import os
import signal
import threading

import pytest
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicles.models import Scene
from maintenance.engine import control
from maintenance.engine.interrupts import atomic_whole_commit, caused_by_interrupt
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun, RunBatch
from tests import factories
from tests.properties import HYPOTHESIS

pytestmark = pytest.mark.django_db(transaction=True)
Status = MaintenanceRun.Status


@pytest.fixture(autouse=True)
def main_thread_only():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")


def sigint_at_commit(monkeypatch, number: int, moment: str) -> list[int]:
    """Send this process a real SIGINT at its `number`th COMMIT, just before the
    database is asked to commit or just after it has; returns the commit count."""
    commits = [0]
    real = BaseDatabaseWrapper._commit

    def commit(wrapper):
        commits[0] += 1
        hit = commits[0] == number
        if hit and moment == "before":
            os.kill(os.getpid(), signal.SIGINT)
        result = real(wrapper)
        if hit and moment == "after":
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(BaseDatabaseWrapper, "_commit", commit)
    return commits


def test_a_ctrl_c_during_commit_is_raised_after_it_and_the_block_is_whole(monkeypatch):
    sigint_at_commit(monkeypatch, 1, "before")
    with pytest.raises(KeyboardInterrupt), atomic_whole_commit():
        scene = factories.scene(name="kept")
    assert Scene.objects.filter(pk=scene.pk, name="kept").exists()  # committed
    assert connection.get_autocommit()  # and the connection is usable as it was


def test_a_ctrl_c_inside_the_block_rolls_it_back():
    with pytest.raises(KeyboardInterrupt), atomic_whole_commit():
        factories.scene(name="gone")
        raise KeyboardInterrupt
    assert not Scene.objects.filter(name="gone").exists()


def test_an_interrupt_hidden_behind_the_error_of_its_cleanup_is_recognised():
    def cleanup_fails():
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("can't change 'autocommit' now")

    with pytest.raises(RuntimeError) as raised:
        cleanup_fails()
    assert caused_by_interrupt(raised.value)
    try:
        raise ValueError("plain") from OSError("also plain")
    except ValueError as plain:
        assert not caused_by_interrupt(plain)


@settings(HYPOTHESIS, max_examples=30)
@given(
    scenes=st.integers(1, 12),
    batch_size=st.integers(1, 5),
    commit=st.integers(1, 8),
    moment=st.sampled_from(["before", "after"]),
)
def test_a_ctrl_c_at_any_commit_pauses_the_run_or_lets_it_succeed(
    monkeypatch, scenes, batch_size, commit, moment
):
    MaintenanceRun.objects.all().delete()
    Scene.objects.all().delete()
    eligible = {factories.scene(name=f"old{i}").pk for i in range(scenes)}
    run = create_run("archive_old_scenes", {"batch_size": batch_size}, trigger="cli")

    with monkeypatch.context() as patch:
        sigint_at_commit(patch, commit, moment)
        try:
            run = execute(run)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
    run = MaintenanceRun.objects.get(pk=run.pk)

    if interrupted:
        assert run.status == Status.PAUSED, (run.status, run.error)
        assert "paused by Ctrl-C" in run.error
    else:
        assert run.status == Status.SUCCEEDED, (run.status, run.error)
    # Whatever committed is whole: the data, the batch log and the counters agree.
    logged = RunBatch.objects.filter(run=run)
    archived = set(Scene.objects.filter(archived_at__isnull=False).values_list("pk", flat=True))
    assert archived == {pk for batch in logged for pk in batch.changed_ids}
    assert run.batches == logged.count() and run.processed == len(archived)

    if interrupted:
        run = execute(control.resume(run, send=None))
        assert run.status == Status.SUCCEEDED, run.error
    assert set(Scene.objects.filter(archived_at__isnull=False).values_list("pk", flat=True)) == (
        eligible
    )
    changed = [pk for batch in RunBatch.objects.filter(run=run) for pk in batch.changed_ids]
    assert sorted(changed) == sorted(eligible)  # each exactly once


# --- call_command(): the caller's Ctrl-C is its own again afterwards ---------------------


def _paused_run() -> MaintenanceRun:
    factories.scene(name="old")
    run = create_run("archive_old_scenes", {}, trigger="manual")
    MaintenanceRun.objects.filter(pk=run.pk).pause()
    return run


COMMANDS = {
    "an inline run": lambda: ("run_maintenance", "archive_old_scenes", "--inline"),
    "an inline --fix": lambda: (
        "run_maintenance",
        "validate_data_integrity",
        "--fix",
        "--no-input",
    ),
    "a resume --inline": lambda: ("maintenance_run", "resume", str(_paused_run().pk), "--inline"),
    "an import": lambda: ("import_characters", "/nonexistent/characters.json"),
    "a usage error": lambda: ("run_maintenance", "archive_old_scenes", "--batch-size", "x"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_called_in_process_gives_the_callers_ctrl_c_back(command):
    """A command stops listening to Ctrl-C once its run has ended, so that a late Ctrl-C
    cannot turn a succeeded run into exit 130. Called through call_command() (the
    caller's process goes on), it must hand SIGINT back as it found it: it used to leave
    it ignored for the rest of the process, and every later Ctrl-C went nowhere."""
    from io import StringIO

    from django.core.management import CommandError, call_command

    before = signal.getsignal(signal.SIGINT)
    with contextlib.suppress(CommandError, SystemExit):
        call_command(*COMMANDS[command](), stdout=StringIO(), stderr=StringIO())
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(1)  # the handler runs at the next bytecode boundary
