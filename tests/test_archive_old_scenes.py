"""archive_old_scenes: the rule, its edge cases, batching, dry runs and idempotence."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chronicles.models import Post, Scene
from maintenance import operations
from maintenance.engine.iteration import RunContext
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun, RunBatch
from tests import factories

pytestmark = pytest.mark.django_db
archive = operations.get("archive_old_scenes")
PARAMS = {"older_than_days": 90, "chronicle_id": None}


def run_archive(**raw):
    run = create_run("archive_old_scenes", raw, trigger=MaintenanceRun.Trigger.CLI)
    return execute(run)


def archived_ids():
    return set(Scene.objects.filter(archived_at__isnull=False).values_list("id", flat=True))


def scene_rows():
    return list(Scene.objects.order_by("id").values_list())


def test_archives_old_finished_scenes_and_only_those():
    old = factories.scene(created_days_ago=300, active_days_ago=200)
    no_posts = factories.scene(created_days_ago=100)
    recent = factories.scene(created_days_ago=300, active_days_ago=10)
    unfinished = factories.scene(created_days_ago=400, active_days_ago=300, finished=False)

    run = run_archive()

    assert run.status == "succeeded"
    assert archived_ids() == {old.id, no_posts.id}
    assert (run.processed, run.changed, run.batches) == (2, 2, 1)
    assert Scene.objects.get(pk=unfinished.id).archived_at is None
    assert Scene.objects.get(pk=recent.id).archived_at is None


def test_a_scene_exactly_at_the_cutoff_is_not_archived():
    now = timezone.now()
    context = archive.prepare(PARAMS, now)
    cutoff = now - timedelta(days=90)
    at_cutoff = Scene.objects.create(name="at", finished=True, last_activity_at=cutoff)
    just_before = Scene.objects.create(
        name="before", finished=True, last_activity_at=cutoff - timedelta(microseconds=1)
    )

    eligible = set(archive.eligible(PARAMS, context).values_list("id", flat=True))

    assert eligible == {just_before.id}
    assert at_cutoff.id not in eligible


def test_an_archived_scene_keeps_its_archive_time():
    scene = factories.scene(created_days_ago=300, archived=True)
    before = Scene.objects.get(pk=scene.id).archived_at

    run = run_archive()

    assert run.changed == 0
    assert Scene.objects.get(pk=scene.id).archived_at == before


def test_a_recent_post_keeps_a_scene_whose_last_activity_lags_behind():
    scene = factories.scene(created_days_ago=300, active_days_ago=200)
    factories.bulk_post(scene, days_ago_=3)

    run_archive()

    assert archived_ids() == set()


def test_older_than_days_moves_the_cutoff():
    scene = factories.scene(created_days_ago=40, active_days_ago=40)

    assert run_archive().changed == 0
    assert run_archive(older_than_days=30).changed == 1
    assert archived_ids() == {scene.id}


def test_the_chronicle_filter():
    mine, theirs = factories.chronicle("Mine"), factories.chronicle("Theirs")
    inside = factories.scene(chronicle=mine)
    outside = factories.scene(chronicle=theirs)
    orphan = factories.scene(chronicle=None)

    run = run_archive(chronicle_id=mine.id)

    assert run.params["chronicle_id"] == mine.id
    assert archived_ids() == {inside.id}
    assert outside.id not in archived_ids() and orphan.id not in archived_ids()


def test_many_more_rows_than_the_batch_size():
    eligible = {factories.scene(name=f"s{i}").id for i in range(23)}
    factories.scene(active_days_ago=5)  # interleaved rows that stay

    run = run_archive(batch_size=4)

    assert archived_ids() == eligible
    assert (run.processed, run.changed, run.batches) == (23, 23, 6)
    batches = list(RunBatch.objects.filter(run=run).order_by("number"))
    assert [b.number for b in batches] == [1, 2, 3, 4, 5, 6]
    # Every change is traceable to its run and batch.
    assert {i for b in batches for i in b.changed_ids} == eligible


def context_of(prepared, batch_size, dry_run=False):
    return RunContext(None, PARAMS, prepared, dry_run, batch_size)


def test_a_post_arriving_between_selection_and_update_keeps_its_scene():
    context = archive.prepare(PARAMS, timezone.now())
    quiet = factories.scene()
    revived = factories.scene()
    bulk_revived = factories.scene()

    selected = archive.walk(context_of(context, 100)).batch_after(None, 100).items
    Post.objects.create(scene=revived, message="I'm back")
    factories.bulk_post(bulk_revived)
    archived = archive.archive(PARAMS, context, selected)

    assert selected == [quiet.id, revived.id, bulk_revived.id]
    assert archived == [quiet.id]
    assert archived_ids() == {quiet.id}


def test_a_dry_run_reports_the_real_counts_and_writes_nothing():
    for i in range(7):
        factories.scene(name=f"old{i}")
    factories.scene(active_days_ago=1)
    before = scene_rows()

    dry = run_archive(dry_run=True, batch_size=3)

    assert scene_rows() == before
    real = run_archive(batch_size=3)
    assert (dry.processed, dry.changed, dry.batches) == (real.processed, real.changed, 3)
    assert dry.changed == 7
    dry_ids = {i for b in dry.batch_log.all() for i in b.changed_ids}
    assert dry_ids == archived_ids()


def test_a_second_run_changes_nothing():
    for i in range(5):
        factories.scene(name=f"old{i}")
    run_archive()
    after_first = scene_rows()

    second = run_archive()

    assert second.status == "succeeded"
    assert (second.processed, second.changed) == (0, 0)
    assert scene_rows() == after_first


def test_a_batch_costs_the_same_queries_whatever_its_size():
    for i in range(40):
        factories.scene(name=f"old{i}")
    context = archive.prepare(PARAMS, timezone.now())

    counts = []
    for batch_size in (5, 30):
        with CaptureQueriesContext(connection) as queries:
            archive.run_batch(context_of(context, batch_size), None)
        counts.append(len(queries))

    assert counts[0] == counts[1] == 3  # select ids, UPDATE with the re-check, read back


def test_a_batch_reports_what_it_archived_when_the_re_check_left_some_out():
    for i in range(10):
        factories.scene(name=f"old{i}")
    revived = factories.scene(name="revived")
    factories.bulk_post(revived)  # a recent post, though last_activity_at lags behind
    context = archive.prepare(PARAMS, timezone.now())

    result = archive.run_batch(context_of(context, 50), None)

    assert result.processed == 11 and result.changed == 10
    assert revived.id not in result.changed_ids


def test_a_whole_batch_with_bookkeeping_is_a_constant_number_of_queries(settings):
    # Sessions of other tests waiting on locks must not throttle (and add queries) here.
    settings.MAINTENANCE_MAX_LOCK_WAITERS = 100_000
    for i in range(30):
        factories.scene(name=f"old{i}")

    def queries_for(batch_size):
        Scene.objects.update(archived_at=None)
        run = create_run(
            "archive_old_scenes", {"batch_size": batch_size}, trigger=MaintenanceRun.Trigger.CLI
        )
        with CaptureQueriesContext(connection) as queries:
            run = execute(run)
        # The health check runs once a second, not once a batch: not part of a batch.
        return len([q for q in queries if "pg_stat_replication" not in q["sql"]]), run.batches

    few_queries, few_batches = queries_for(15)  # 2 batches
    many_queries, many_batches = queries_for(3)  # 10 batches

    per_batch = (many_queries - few_queries) / (many_batches - few_batches)
    # The operation's 3, the batch log, the run row, and (inside the test's transaction)
    # a SAVEPOINT and its RELEASE for the batch's atomic block; on PostgreSQL also the
    # batch's lock and statement timeouts.
    assert per_batch == (8 if connection.vendor == "postgresql" else 7)
