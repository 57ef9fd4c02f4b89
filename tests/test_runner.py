"""The run engine: one running run per operation, leases, checkpoints and resume,
retries of transient errors, readable failures."""

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from chronicles.models import Scene
from maintenance import operations
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun
from tests import factories

pytestmark = pytest.mark.django_db
archive = operations.get("archive_old_scenes")
Status = MaintenanceRun.Status


class Stop(Exception):
    pass


def new_run(**raw):
    return create_run("archive_old_scenes", raw, trigger=MaintenanceRun.Trigger.CLI)


def archived_ids():
    return set(Scene.objects.filter(archived_at__isnull=False).values_list("id", flat=True))


def stop_after(batches):
    def on_batch(report):
        if report.number == batches:
            raise Stop(f"stopped after batch {batches}")

    return on_batch


@pytest.fixture
def old_scenes():
    return [factories.scene(name=f"old{i}").id for i in range(20)]


def running_holder(heartbeat_age):
    now = timezone.now()
    return MaintenanceRun.objects.create(
        operation="archive_old_scenes",
        trigger=MaintenanceRun.Trigger.BEAT,
        status=Status.RUNNING,
        started_at=now - heartbeat_age,
        heartbeat_at=now - heartbeat_age,
        lease_token="someone-else",
    )


def test_a_second_trigger_is_skipped_while_a_run_holds_the_operation(old_scenes):
    holder = running_holder(heartbeat_age=timedelta(seconds=1))

    run = execute(new_run())

    assert run.status == Status.SKIPPED
    assert run.skipped_because_of_id == holder.id
    assert f"run #{holder.id}" in run.error
    assert archived_ids() == set()


def test_the_database_allows_one_running_run_per_operation():
    from django.db import IntegrityError, transaction

    running_holder(heartbeat_age=timedelta(0))
    with pytest.raises(IntegrityError), transaction.atomic():
        running_holder(heartbeat_age=timedelta(0))


def test_a_dead_run_is_taken_over_and_resumed_from_its_checkpoint(old_scenes, settings):
    first = new_run(batch_size=5)
    die_after(first, 2, settings)

    second = execute(new_run(batch_size=5))

    first.refresh_from_db()
    assert first.status == Status.FAILED
    assert f"taken over by run #{second.pk}" in first.error
    assert second.status == Status.SUCCEEDED
    assert second.resumed_from_id == first.pk
    assert (first.processed, second.processed) == (10, 10)
    assert archived_ids() == set(old_scenes)


def die_after(run, batches, settings):
    """Stop `run` after some batches as a killed worker would leave it: still running,
    its heartbeat older than the lease."""
    with pytest.raises(KeyboardInterrupt):
        execute(run, on_batch=_interrupt_after(batches))
    MaintenanceRun.objects.filter(pk=run.pk).update(
        status=Status.RUNNING,
        lease_token="dead-worker",
        heartbeat_at=timezone.now() - timedelta(seconds=settings.MAINTENANCE_LEASE_SECONDS + 1),
    )


def _interrupt_after(batches):
    def on_batch(report):
        if report.number == batches:
            raise KeyboardInterrupt

    return on_batch


def test_a_failed_run_is_resumed_by_the_next_trigger_and_ends_like_an_uninterrupted_one(
    old_scenes,
):
    first = execute(new_run(batch_size=3), on_batch=stop_after(2))

    assert first.status == Status.FAILED
    assert "Stop: stopped after batch 2" in first.error
    assert "data is as of batch 2" in first.error
    assert len(archived_ids()) == 6

    second = execute(new_run(batch_size=3))

    assert second.status == Status.SUCCEEDED
    assert second.resumed_from_id == first.pk
    assert second.processed == 14
    assert archived_ids() == set(old_scenes)


def test_a_resumed_run_keeps_the_cutoff_of_the_run_it_resumes(old_scenes):
    first = execute(new_run(batch_size=4), on_batch=stop_after(1))
    first.refresh_from_db()

    second = execute(new_run(batch_size=4))

    assert second.checkpoint["context"] == first.checkpoint["context"]


def test_a_failed_run_with_other_parameters_is_not_resumed(old_scenes):
    execute(new_run(batch_size=3), on_batch=stop_after(1))

    other = execute(new_run(batch_size=3, older_than_days=30))

    assert other.resumed_from_id is None
    assert other.processed == 17
    assert archived_ids() == set(old_scenes)


def test_a_redelivered_run_continues_where_it_stopped(old_scenes, settings):
    run = new_run(batch_size=4)
    die_after(run, 3, settings)
    # The broker delivers the same run again once the lease is over.
    run.refresh_from_db()

    again = execute(run)

    assert again.status == Status.SUCCEEDED
    assert again.attempts == 2
    assert again.processed == 20 and again.batches == 5
    assert archived_ids() == set(old_scenes)


def test_a_runner_that_lost_its_lease_commits_nothing_more(old_scenes):
    run = new_run(batch_size=5)

    def thief(report):
        if report.number == 1:
            MaintenanceRun.objects.filter(pk=run.pk).update(lease_token="thief")

    stopped = execute(run, on_batch=thief)

    assert stopped.status == Status.RUNNING  # it belongs to the thief now
    assert stopped.batches == 1
    assert len(archived_ids()) == 5


def test_an_error_fails_the_run_readably_and_keeps_committed_batches(old_scenes, monkeypatch):
    real_run_batch = archive.run_batch
    calls = []

    def breaking(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("the chronicle exploded\nwith a long traceback-like tail")
        return real_run_batch(*args, **kwargs)

    monkeypatch.setattr(archive, "run_batch", breaking)

    run = execute(new_run(batch_size=4))

    assert run.status == Status.FAILED
    assert run.error.startswith("ValueError: the chronicle exploded (data is as of batch 2")
    assert "\n" not in run.error
    assert run.finished_at is not None and run.lease_token == ""
    assert len(archived_ids()) == 8


@pytest.mark.django_db(transaction=True)
def test_transient_database_errors_are_retried(old_scenes, monkeypatch, settings):
    settings.MAINTENANCE_RETRY_BACKOFF = 0
    real_run_batch = archive.run_batch
    failures = []

    def flaky(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise OperationalError("server closed the connection unexpectedly")
        return real_run_batch(*args, **kwargs)

    monkeypatch.setattr(archive, "run_batch", flaky)

    run = execute(new_run(batch_size=10))

    assert len(failures) == 2
    assert run.status == Status.SUCCEEDED
    assert archived_ids() == set(old_scenes)


@pytest.mark.django_db(transaction=True)
def test_a_database_error_that_persists_fails_the_run(old_scenes, monkeypatch, settings):
    settings.MAINTENANCE_RETRY_BACKOFF = 0
    settings.MAINTENANCE_DB_RETRIES = 2

    def down(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(archive, "run_batch", down)

    run = execute(new_run())

    assert run.status == Status.FAILED
    assert run.error.startswith("OperationalError: could not connect to server")
    assert archived_ids() == set()


@pytest.mark.django_db(transaction=True)
def test_two_runs_started_together_one_runs_and_one_is_skipped(old_scenes):
    if connection.vendor == "sqlite":
        pytest.skip("needs a server database shared by two threads (runs in the PG suite)")
    first_has_a_batch = threading.Event()
    release_first = threading.Event()
    results = {}

    def hold(report):
        first_has_a_batch.set()
        release_first.wait(20)

    def start(name, run, on_batch=None):
        try:
            results[name] = execute(run, on_batch=on_batch)
        finally:
            connection.close()

    first, second = new_run(batch_size=5), new_run(batch_size=5)
    holder = threading.Thread(target=start, args=("first", first, hold))
    holder.start()
    assert first_has_a_batch.wait(20)
    start("second", second)
    release_first.set()
    holder.join(30)

    assert results["first"].status == Status.SUCCEEDED
    assert results["second"].status == Status.SKIPPED
    assert results["second"].skipped_because_of_id == first.pk
    assert archived_ids() == set(old_scenes)
