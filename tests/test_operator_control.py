"""Pause, resume and cancel at batch boundaries; slices and shutdowns that give the worker
back; the sweeper; runs that give up; progress and the maintenance_run command."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicles.models import Scene
from maintenance.engine import control
from maintenance.engine.iteration import ChainedWalk, KeysetWalk
from maintenance.engine.runner import Budget, execute
from maintenance.engine.runs import create_run
from maintenance.engine.states import ACTIVE, TRANSITIONS, Status
from maintenance.engine.sweeper import sweep
from maintenance.models import MaintenanceRun, RunBatch
from tests import factories
from tests.test_hostile_input import HYPOTHESIS

pytestmark = pytest.mark.django_db
SCENES = 24
BATCH = 4


@pytest.fixture
def old_scenes():
    return {factories.scene(name=f"old{i}").id for i in range(SCENES)}


def new_run(**raw):
    raw.setdefault("batch_size", BATCH)
    return create_run("archive_old_scenes", raw, trigger=MaintenanceRun.Trigger.CLI)


def archived():
    return set(Scene.objects.filter(archived_at__isnull=False).values_list("id", flat=True))


def logged_ids(run):
    return {i for batch in RunBatch.objects.filter(run=run) for i in batch.changed_ids}


def at_batch(number, action):
    """An on_batch callback doing `action(run)` once batch `number` has committed."""

    def on_batch(report):
        if report.number == number:
            action(MaintenanceRun.objects.get(pk=report.run_id))

    return on_batch


def test_pause_stops_at_the_next_batch_and_resume_finishes_like_an_uninterrupted_run(
    old_scenes,
):
    run = execute(new_run(), on_batch=at_batch(2, control.pause))

    assert run.status == Status.PAUSED
    assert run.batches == 3  # the batch under way when the pause came committed, no more
    assert archived() == logged_ids(run) and len(archived()) == 3 * BATCH

    control.resume(run, send=None)
    run = execute(run)

    assert run.status == Status.SUCCEEDED
    assert archived() == old_scenes == logged_ids(run)
    assert run.attempts == 2 and run.processed == SCENES


def test_a_queued_run_pauses_and_cancels_at_once(old_scenes):
    run = new_run()
    assert control.pause(run).status == Status.PAUSED
    assert execute(run).status == Status.PAUSED  # a stale delivery does nothing
    assert control.cancel(run).status == Status.CANCELLED
    assert run.finished_at is not None and archived() == set()


def test_cancel_stops_at_the_next_batch_and_keeps_what_was_committed(old_scenes):
    run = execute(new_run(), on_batch=at_batch(1, control.cancel))

    assert run.status == Status.CANCELLED and run.finished_at is not None
    assert archived() == logged_ids(run) and len(archived()) == 2 * BATCH
    with pytest.raises(control.NotAllowed, match="is cancelled"):
        control.resume(run, send=None)


def test_a_run_gives_its_worker_back_after_each_slice_and_still_finishes(old_scenes):
    requeued = []

    def requeue(run):
        MaintenanceRun.objects.filter(pk=run.pk).resume()
        requeued.append(run.pk)

    run = new_run()
    budget = dict(slice_seconds=0, requeue=requeue)  # every slice: one batch at most
    for _ in range(SCENES):
        run = execute(run, budget=Budget(**budget))
        if run.status == Status.SUCCEEDED:
            break
        assert run.status == Status.QUEUED  # interrupted, then straight back on the queue

    assert run.status == Status.SUCCEEDED
    assert len(requeued) >= SCENES // BATCH - 1
    assert archived() == old_scenes == logged_ids(run)


def test_a_worker_shutting_down_interrupts_at_the_next_boundary(old_scenes):
    asked = {"stop": False}

    def on_batch(report):
        asked["stop"] = report.number >= 2

    run = execute(new_run(), on_batch=on_batch, budget=Budget(should_yield=lambda: asked["stop"]))

    assert run.status == Status.INTERRUPTED and run.batches == 2
    assert "shutting down" in run.error


def test_the_stop_flag_on_the_run_row_interrupts_a_runner_in_another_process(old_scenes):
    def shutdown_asks(run):  # what a worker's main process does on a warm shutdown
        MaintenanceRun.objects.filter(pk=run.pk).update(stop_requested=True)

    run = execute(new_run(), on_batch=at_batch(1, shutdown_asks))

    assert run.status == Status.INTERRUPTED and run.batches == 2


class SoftLimit(Exception):
    pass


def test_the_soft_time_limit_rolls_back_the_batch_under_way_and_interrupts(old_scenes, monkeypatch):
    from maintenance import operations

    archive = operations.get("archive_old_scenes")
    real = archive.run_batch
    calls = []

    def limited(ctx, position, size=None):
        calls.append(position)
        result = real(ctx, position, size)
        if len(calls) == 3:
            raise SoftLimit("soft time limit exceeded")  # after writing, before commit
        return result

    monkeypatch.setattr(archive, "run_batch", limited)
    run = execute(new_run(), budget=Budget(interruptions=(SoftLimit,)))

    assert run.status == Status.INTERRUPTED and run.batches == 2
    assert archived() == logged_ids(run) and len(archived()) == 2 * BATCH


def killed_mid_run():
    """A run with committed batches whose runner died: still running, heartbeat old."""
    run = execute(new_run(), on_batch=at_batch(1, control.pause))
    MaintenanceRun.objects.filter(pk=run.pk).resume()
    MaintenanceRun.objects.filter(pk=run.pk).claim("a-killed-worker")
    MaintenanceRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=60)
    )
    run.refresh_from_db()
    return run


def test_the_sweeper_interrupts_dead_runs_and_sends_them_again(old_scenes, settings):
    settings.MAINTENANCE_LEASE_SECONDS = 5
    run = killed_mid_run()
    sent = []

    swept = sweep(send=lambda r: sent.append(r.pk))

    run.refresh_from_db()
    assert swept.expired == [run.pk] and swept.requeued == [run.pk] and sent == [run.pk]
    assert run.status == Status.QUEUED and run.lease_token == ""
    assert execute(run).status == Status.SUCCEEDED
    assert archived() == old_scenes == logged_ids(run)


def test_a_redelivered_message_cannot_commit_for_a_runner_that_lost_its_lease(old_scenes, settings):
    settings.MAINTENANCE_LEASE_SECONDS = 5
    run = killed_mid_run()
    sweep(send=lambda r: None)  # interrupted and queued again, under no lease

    # The killed runner's token no longer matches: its writes would commit nothing.
    assert MaintenanceRun.objects.filter(pk=run.pk, lease_token="a-killed-worker").count() == 0
    assert execute(run).status == Status.SUCCEEDED
    assert archived() == old_scenes == logged_ids(run)
    numbers = list(RunBatch.objects.filter(run=run).values_list("number", flat=True))
    assert numbers == list(range(1, len(numbers) + 1))  # no batch twice


def test_the_sweeper_resends_a_queued_run_whose_message_was_lost(settings):
    settings.MAINTENANCE_REQUEUE_AFTER_SECONDS = 60
    fresh, lost = new_run(), new_run()
    MaintenanceRun.objects.filter(pk=lost.pk).update(
        queued_at=timezone.now() - timedelta(seconds=61)
    )
    sent = []

    assert sweep(send=lambda r: sent.append(r.pk)).resent == [lost.pk]
    assert sent == [lost.pk]
    assert sweep(send=lambda r: sent.append(r.pk)).resent == []  # queued_at was renewed
    fresh.refresh_from_db()
    assert fresh.status == Status.QUEUED


def test_the_sweeper_leaves_an_interrupted_run_while_another_holds_its_operation():
    waiting = new_run()
    MaintenanceRun.objects.filter(pk=waiting.pk).claim("w")
    MaintenanceRun.objects.filter(pk=waiting.pk).stop("w")  # interrupted
    holder = new_run()
    assert MaintenanceRun.objects.filter(pk=holder.pk).claim("holder") == 1

    assert sweep(send=lambda r: None).requeued == []

    waiting.refresh_from_db()
    assert waiting.status == Status.INTERRUPTED


def test_a_resumed_run_waits_its_turn_instead_of_being_skipped(old_scenes):
    paused = execute(new_run(), on_batch=at_batch(1, control.pause))
    holder = new_run()
    MaintenanceRun.objects.filter(pk=holder.pk).claim("holder")
    control.resume(paused, send=None)

    paused = execute(paused)

    assert paused.status == Status.INTERRUPTED and f"run #{holder.pk}" in paused.error


def test_a_run_that_never_progresses_gives_up_after_max_attempts(old_scenes, settings):
    settings.MAINTENANCE_MAX_ATTEMPTS = 3
    run = new_run()
    MaintenanceRun.objects.filter(pk=run.pk).update(idle_attempts=3)

    run = execute(run)

    assert run.status == Status.FAILED and "3 attempts in a row without progress" in run.error
    assert archived() == set()


def test_a_validation_resumes_in_the_rule_its_position_names_whatever_the_order():
    def walk(names):
        return ChainedWalk({name: KeysetWalk(Scene.objects.none()) for name in names})

    position = {"walk": "b", "at": 7}
    assert walk(["a", "b", "c"])._start(position) == (1, 7)
    assert walk(["c", "b", "a"])._start(position) == (1, 7)
    assert walk(["b", "z"])._start(position) == (0, 7)
    # a position of a rule this run does not have starts from the first rule again
    assert walk(["a", "c"])._start(position) == (0, None)


# --- the command ---


def command(*args):
    out = StringIO()
    call_command("maintenance_run", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_maintenance_run_show_pause_resume_cancel(old_scenes):
    run = new_run()

    shown = json.loads(command("show", str(run.pk), "--json"))
    assert shown["status"] == "queued" and shown["run_id"] == run.pk
    for key in ("total", "rows_per_s", "eta_s", "throttled_s", "attempts", "partitions"):
        assert key in shown

    assert json.loads(command("pause", str(run.pk), "--json"))["status"] == "paused"
    with pytest.raises(CommandError, match="is paused: cannot pause") as refused:
        command("pause", str(run.pk))
    assert refused.value.returncode == 2

    finished = json.loads(command("resume", str(run.pk), "--inline", "--json"))
    assert finished["status"] == "succeeded" and finished["processed"] == SCENES
    assert finished["rows_per_s"] > 0 and finished["eta_s"] is None

    with pytest.raises(CommandError, match="is succeeded: cannot cancel"):
        command("cancel", str(run.pk))
    assert f"#{run.pk} archive_old_scenes | succeeded" in command("list")


@pytest.mark.parametrize("run_id", ["999999", "abc", "-1", "1e3", "²", "99999999999999999999"])
def test_maintenance_run_refuses_unknown_runs_with_exit_2(run_id):
    with pytest.raises(CommandError) as refused:
        command("show", run_id)
    assert refused.value.returncode == 2 and "\n" not in str(refused.value)


def test_progress_shows_rate_eta_and_a_stale_heartbeat(old_scenes, settings):
    settings.MAINTENANCE_LEASE_SECONDS = 5
    run = execute(new_run(), on_batch=at_batch(1, control.pause))
    MaintenanceRun.objects.filter(pk=run.pk).update(total=SCENES)
    shown = json.loads(command("show", str(run.pk), "--json"))
    assert shown["rows_per_s"] > 0 and shown["eta_s"] >= 0 and shown["stale"] is False

    MaintenanceRun.objects.filter(pk=run.pk).resume()
    MaintenanceRun.objects.filter(pk=run.pk).claim("gone")
    MaintenanceRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=30)
    )
    assert json.loads(command("show", str(run.pk), "--json"))["stale"] is True
    assert "stale: no heartbeat since" in command("list", "--status", "running")


@settings(HYPOTHESIS, max_examples=100)
@given(
    action=st.sampled_from(["show", "pause", "resume", "cancel"]),
    run_id=st.one_of(
        st.text(max_size=12),
        st.integers(min_value=-(10**20), max_value=10**20).map(str),
        st.sampled_from(["١٢", "²", "1e3", " 1", "1\n", "0x1", "\x1b[31m1"]),
    ),
)
def test_any_run_id_is_a_run_or_one_line_with_exit_2(action, run_id):
    MaintenanceRun.objects.all().delete()
    run = new_run()
    text = run_id.strip(" ")
    if text.isascii() and text.isdigit() and int(text) == run.pk:
        return  # that one names the run
    before = MaintenanceRun.objects.values_list("id", "status").get(pk=run.pk)
    try:
        command(action, run_id)
    except CommandError as refused:
        assert refused.returncode == 2
        assert "\n" not in str(refused) and "\x1b" not in str(refused)
    else:
        raise AssertionError(f"{run_id!r} was taken for a run")
    assert MaintenanceRun.objects.values_list("id", "status").get(pk=run.pk) == before


@settings(HYPOTHESIS, max_examples=60)
@given(actions=st.lists(st.sampled_from(["pause", "resume", "cancel", "batch"]), max_size=12))
def test_any_sequence_of_operator_actions_follows_the_table(old_scenes, actions):
    """Operator actions interleaved with a runner's batches: every move is one the table
    allows, a refused one changes nothing, and the data is always whole batches."""
    Scene.objects.update(archived_at=None)
    MaintenanceRun.objects.all().delete()
    run = new_run()
    for action in actions:
        before = MaintenanceRun.objects.get(pk=run.pk).status
        if action == "batch":  # a runner takes one slice of one batch
            execute(run, budget=Budget(slice_seconds=0, requeue=None))
            continue
        try:
            moved = command(action, str(run.pk), "--json") if action != "resume" else None
            if action == "resume":
                moved = command("resume", str(run.pk), "--inline", "--json")
        except CommandError as refused:
            assert refused.returncode == 2 and f"is {before}: cannot {action}" in str(refused)
            assert MaintenanceRun.objects.get(pk=run.pk).status == before
            continue
        after = json.loads(moved)["status"]
        assert before in TRANSITIONS[action]
        if action != "resume":
            assert after == TRANSITIONS[action][before]
    run.refresh_from_db()
    assert run.status not in ACTIVE  # no runner is left holding it
    assert archived() == logged_ids(run)


# --- races found by review ---


def test_a_pause_that_lands_between_interrupt_and_requeue_wins(old_scenes):
    run = execute(new_run(), budget=Budget(should_yield=lambda: True))  # interrupted
    assert run.status == Status.INTERRUPTED
    control.pause(run)  # the operator, just before the runner re-queues it

    assert MaintenanceRun.objects.filter(pk=run.pk).requeue() == 0
    assert sweep(send=lambda r: None).requeued == []
    run.refresh_from_db()
    assert run.status == Status.PAUSED


def test_a_redelivery_of_a_dead_pausing_run_pauses_it_instead_of_running_on(old_scenes, settings):
    settings.MAINTENANCE_LEASE_SECONDS = 1
    run = killed_mid_run()
    control.pause(run)  # running -> pausing, but its runner is gone
    before = run.batches

    run = execute(run)  # the message delivered again

    assert run.status == Status.PAUSED and run.batches == before


def test_a_run_that_keeps_killing_its_worker_is_not_taken_over_forever(old_scenes, settings):
    settings.MAINTENANCE_LEASE_SECONDS = 1
    settings.MAINTENANCE_MAX_ATTEMPTS = 3
    run = killed_mid_run()
    MaintenanceRun.objects.filter(pk=run.pk).update(idle_attempts=3)

    run = execute(run)  # redelivered after the crash

    assert run.status == Status.FAILED and "without progress" in run.error


def test_a_fresh_trigger_yields_to_a_run_between_slices(old_scenes):
    first = execute(new_run(), budget=Budget(slice_seconds=0, requeue=lambda r: None))
    MaintenanceRun.objects.filter(pk=first.pk).requeue()  # queued for its next slice

    second = execute(new_run())

    assert second.status == Status.SKIPPED and second.skipped_because_of_id == first.pk
    assert f"under way as run #{first.pk}" in second.error


def test_only_the_newest_message_of_a_run_runs_it(old_scenes):
    from maintenance.tasks import OPERATION_TASKS

    run = new_run()
    MaintenanceRun.objects.filter(pk=run.pk).update(celery_task_id="newest")
    task = OPERATION_TASKS["archive_old_scenes"]

    stale = factories.task_summary(task.apply(kwargs={"run_id": run.pk}, task_id="older"))
    assert stale["status"] == "queued" and archived() == set()
    current = factories.task_summary(task.apply(kwargs={"run_id": run.pk}, task_id="newest"))
    assert current["status"] == "succeeded" and archived() == old_scenes


def test_the_sweeper_fails_a_run_of_an_operation_that_no_longer_exists(settings):
    settings.MAINTENANCE_REQUEUE_AFTER_SECONDS = 1
    run = new_run()
    MaintenanceRun.objects.filter(pk=run.pk).update(
        operation="retired_operation", queued_at=timezone.now() - timedelta(seconds=5)
    )

    sweep(send=lambda r: None)

    run.refresh_from_db()
    assert run.status == Status.FAILED and "no longer exists" in run.error


def test_a_failed_run_is_one_failure_task_not_one_per_stale_copy():
    from maintenance.tasks import OPERATION_TASKS

    task = OPERATION_TASKS["archive_old_scenes"]
    first = task.apply(kwargs={"older_than_days": "soon"})  # a failed run that says why
    assert first.failed()
    run_id = first.result.summary["run_id"]

    copy = task.apply(kwargs={"run_id": run_id})  # a stale copy arriving later

    assert copy.successful() and copy.result["status"] == "failed"
