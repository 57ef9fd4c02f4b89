"""Partitions with real processes (DESIGN.md "Partitions: one run across many workers"):
two celery workers of two processes each and beat share one archive run split into 8
partitions over 200,000 scenes. One worker is SIGKILLed mid-way, or the operator pauses
and resumes the run; either way every eligible scene is archived exactly once, by one
committed batch in the log, and the run succeeds with no new trigger."""

import signal
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from django.db.models import Max, Min, Sum
from django.utils import timezone

from chronicles.models import Scene
from chronicles.testdata.generator import Options, generate
from maintenance.engine import control
from maintenance.engine.enqueue import enqueue, send
from maintenance.engine.runs import create_run
from maintenance.engine.states import ACTIVE
from maintenance.models import MaintenanceRun, RunBatch, RunPartition
from tests.integration.conftest import LEASE, empty_test_broker
from tests.integration.test_operator_control import sweep_every_second
from tests.integration.test_reliability import (
    Status,
    archived_by_runs,
    expected_archive,
    finished,
    wait_for,
)
from tests.services import CeleryProcess

pytestmark = pytest.mark.django_db(transaction=True)

SCENES = 200_000
PARTITIONS = 8
# Small pinned batches: the run lasts long enough to act on it mid-way.
BATCH = 200
WORKER_ENV = {"MAINTENANCE_LEASE_SECONDS": str(LEASE), "CELERY_WORKER_CONCURRENCY": "2"}


@pytest.fixture
def scenes(real_services, settings):
    """200,000 generated scenes, committed so the worker processes see them. Returns the
    moment before: anything archived since was archived by the run of the test."""
    settings.MAINTENANCE_LEASE_SECONDS = LEASE
    empty_test_broker()
    started = timezone.now()
    generate(
        Options(
            seed=14,
            chronicles=20,
            characters=2_000,
            scenes=SCENES,
            posts_per_scene=1,
            ledger_entries=1,
            defect_rate=0,
        )
    )
    return started


class Workers:
    """Celery worker processes named w1, w2, ... (so a partition's `worker` says whose
    it is), and beat, all stopped at the end whatever happened."""

    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self.processes = {}

    def start(self, *names):
        for name in names:
            directory = self.log_dir / name
            directory.mkdir(parents=True, exist_ok=True)
            worker = CeleryProcess("worker", directory, extra_env=WORKER_ENV)
            worker.argv.append(f"--hostname={name}@%h")
            self.processes[name] = worker.start()
        for name in names:  # started together, so their start-ups overlap
            self.processes[name].wait_for_log("ready.", timeout=60)

    def start_beat(self):
        directory = self.log_dir / "beat"
        directory.mkdir(parents=True, exist_ok=True)
        self.processes["beat"] = CeleryProcess("beat", directory).start()

    def __getitem__(self, name):
        return self.processes[name]

    def stop_all(self):
        for process in self.processes.values():
            process.stop()


@pytest.fixture
def workers(tmp_path):
    group = Workers(tmp_path)
    yield group
    group.stop_all()


def record_partitioned_run():
    """Record the run (its cutoff and ranges fixed now) and what it must archive, judged
    before anything is sent; then send it, one message per partition."""
    run = create_run(
        "archive_old_scenes",
        {"batch_size": BATCH, "partitions": PARTITIONS},
        trigger=MaintenanceRun.Trigger.CLI,
        celery_task_id=str(uuid.uuid4()),
    )
    cutoff = datetime.fromisoformat(run.checkpoint["context"]["cutoff"])
    eligible = expected_archive(timezone.now(), cutoff)
    assert len(eligible) > 50_000  # some 40 batches or more per partition
    enqueue(run)
    return run, eligible


def batches_of(run):
    return RunBatch.objects.filter(run=run).count()


def partitions_of(run):
    return list(RunPartition.objects.filter(run=run).order_by("number"))


def finished_pausing(run):
    """The run and every one of its partitions paused."""
    run.refresh_from_db()
    statuses = {p.status for p in partitions_of(run)}
    return run.status == Status.PAUSED and statuses == {Status.PAUSED}


def working(run):
    """{worker name: [partition numbers it runs now]}"""
    held = {}
    for partition in RunPartition.objects.filter(run=run, status__in=ACTIVE):
        held.setdefault(partition.worker.split("@")[0], []).append(partition.number)
    return held


def assert_archived_exactly_once(run, eligible, since):
    """Every eligible scene archived, by exactly one committed batch of the log, within
    its partition's range; the counters of each partition are the sums of its batches,
    and the run's are the sums of its partitions; one run, no new trigger."""
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED, run.error
    assert list(MaintenanceRun.objects.values_list("pk", flat=True)) == [run.pk]
    parts = partitions_of(run)
    assert [p.number for p in parts] == list(range(1, PARTITIONS + 1))
    assert {p.status for p in parts} == {Status.SUCCEEDED}, [(p.number, p.error) for p in parts]

    logged = RunBatch.objects.filter(run=run)
    ids = [pk for changed in logged.values_list("changed_ids", flat=True) for pk in changed]
    assert len(ids) == len(set(ids)), "a scene archived by two batches"
    assert set(ids) == eligible
    assert archived_by_runs(since) == eligible  # nothing archived outside the log

    for part in parts:
        own = logged.filter(partition=part.number)
        numbers = list(own.order_by("number").values_list("number", flat=True))
        assert numbers == list(range(1, part.batches + 1)), part
        sums = own.aggregate(processed=Sum("processed"), changed=Sum("changed"))
        assert (part.processed, part.changed) == (sums["processed"] or 0, sums["changed"] or 0)
        assert part.checkpoint["done"], part
        within = Scene.objects.filter(id__in=[pk for b in own for pk in b.changed_ids])
        edges = within.aggregate(low=Min("id"), high=Max("id"))
        if edges["low"] is not None:
            assert part.lower_id is None or edges["low"] >= part.lower_id, part
            assert part.upper_id is None or edges["high"] <= part.upper_id, part
    assert logged.exclude(partition__in=range(1, PARTITIONS + 1)).count() == 0

    assert run.batches == sum(p.batches for p in parts) == logged.count()
    assert run.processed == sum(p.processed for p in parts)
    assert run.processed == logged.aggregate(total=Sum("processed"))["total"]
    assert run.changed == sum(p.changed for p in parts) == len(ids)
    for batch in logged.order_by("?")[:30]:
        stamps = set(
            Scene.objects.filter(id__in=batch.changed_ids).values_list("archived_at", flat=True)
        )
        assert len(stamps) == 1  # one batch, one UPDATE, all of it committed


def test_a_sigkilled_worker_s_partitions_are_swept_and_finished_by_the_other(scenes, workers):
    sweep_every_second()
    workers.start("w1", "w2")
    workers.start_beat()
    run, eligible = record_partitioned_run()
    expected_batches = len(eligible) // BATCH

    # Both workers at work on two partitions each, a fifth or so of the batches done.
    wait_for(lambda: sorted(len(held) for held in working(run).values()) == [2, 2])
    wait_for(lambda: batches_of(run) >= expected_batches // 5)
    workers["w1"].stop(sig=signal.SIGKILL)  # the whole worker, pool and all
    at_kill = batches_of(run)
    dead = working(run).get("w1", [])
    assert dead, "w1 held no partition when it was killed"
    assert at_kill < expected_batches * 0.6, "killed too late to be mid-way"

    wait_for(finished(run), timeout=150)  # with beat and w2 alone, no new trigger

    assert_archived_exactly_once(run, eligible, scenes)
    parts = {p.number: p for p in partitions_of(run)}
    for number in dead:
        # Swept (lease expired, interrupted, sent again) and finished by w2 from its
        # checkpoint: the uncommitted batch was all the kill cost.
        assert parts[number].attempts == 2, parts[number]
        assert parts[number].worker.startswith("w2@"), parts[number]
    assert all(parts[n].attempts == 1 for n in parts if n not in dead)
    assert "sweeper" in workers["w2"].log()


def test_a_paused_partitioned_run_holds_still_and_resume_finishes_it(scenes, workers):
    sweep_every_second()  # the sweeper must leave a paused run alone
    workers.start("w1", "w2")
    workers.start_beat()
    run, eligible = record_partitioned_run()
    expected_batches = len(eligible) // BATCH

    wait_for(lambda: sorted(len(held) for held in working(run).values()) == [2, 2])
    wait_for(lambda: batches_of(run) >= expected_batches // 5)
    control.pause(run)
    wait_for(lambda: finished_pausing(run), timeout=30)
    paused_at = batches_of(run)
    assert paused_at < expected_batches * 0.8, "paused too late to be mid-way"
    time.sleep(LEASE + 1.5)  # longer than a lease: the sweeper had its chances
    run.refresh_from_db()
    assert run.status == Status.PAUSED
    parts = partitions_of(run)
    assert {p.status for p in parts} == {Status.PAUSED}
    assert batches_of(run) == paused_at  # no batch commits while paused
    assert run.batches == sum(p.batches for p in parts) == paused_at
    for part in parts:  # each keeps its checkpoint: where its last logged batch ended
        last = RunBatch.objects.filter(run=run, partition=part.number).order_by("number").last()
        assert part.checkpoint["position"] == (last.position if last else None), part
        assert not part.checkpoint["done"], part
    attempts = {part.number: part.attempts for part in parts}
    assert list(attempts.values()).count(1) >= 4  # paused under four runners

    control.resume(run, send=send)
    wait_for(finished(run), timeout=150)

    assert_archived_exactly_once(run, eligible, scenes)
    for part in partitions_of(run):
        # Each claimed once more on resume, from its checkpoint.
        assert part.attempts == attempts[part.number] + 1, part
