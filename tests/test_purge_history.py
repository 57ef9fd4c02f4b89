"""purge_history: old runs go with their batches and findings; what is still in use stays
(unfinished runs, each operation's last success, open findings, resume chains); game
data is never touched; dry runs and resumes; the keep rules over random histories."""

import contextlib
import json
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db.models import Count
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.engine.states import FINISHED
from maintenance.models import Finding, MaintenanceRun, RunBatch, RunPartition
from maintenance.monitoring import open_findings
from maintenance.operations.base import ParameterError
from maintenance.operations.rules import RULES
from maintenance.schedules import seed
from tests.properties import HYPOTHESIS

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status
ARCHIVE, VALIDATE, XP, REVERT = (
    "archive_old_scenes",
    "validate_data_integrity",
    "recalculate_xp",
    "revert_run",
)
TRAIT, POST, XP_RULE = "character_trait_out_of_range", "post_without_scene", "character_xp_mismatch"
ALL_RULES = sorted(RULES)


def params_of(operation, scope=None, rules=None, run_id=None):
    """The params a run of `operation` records (what rules_checked and scopes read)."""
    if operation == VALIDATE:
        return {"fix": False, "rules": sorted(rules or ALL_RULES), "chronicle_id": scope}
    if operation == ARCHIVE:
        return {"older_than_days": 90, "chronicle_id": scope}
    if operation == REVERT:
        return {"run_id": run_id}
    return {"chronicle_id": scope}


def record(
    operation=ARCHIVE,
    *,
    days_ago=200.0,
    status=Status.SUCCEEDED,
    took=timedelta(minutes=1),
    dry_run=False,
    params=None,
    findings=(),
    batches=0,
    resumed_from=None,
    now=None,
):
    """A run as the runner leaves it, `days_ago` (or a timedelta) old; findings are
    (rule, object id, fixed)."""
    age = days_ago if isinstance(days_ago, timedelta) else timedelta(days=days_ago)
    created = (now or timezone.now()) - age
    run = MaintenanceRun.objects.create(
        operation=operation,
        trigger="beat",
        status=status,
        dry_run=dry_run,
        params=params_of(operation) if params is None else params,
        created_at=created,
        started_at=created,
        finished_at=created + took if status in FINISHED else None,
        resumed_from=resumed_from,
    )
    Finding.objects.bulk_create(
        Finding(
            run=run,
            rule=rule,
            model="chronicles.Character",
            object_id=object_id,
            message="planted",
            fixed=fixed,
            fingerprint=Finding.fingerprint_of(rule, "chronicles.Character", object_id),
        )
        for rule, object_id, fixed in findings
    )
    RunBatch.objects.bulk_create(
        RunBatch(run=run, number=n, processed=1, changed=0, findings=0, seconds=0.01)
        for n in range(1, batches + 1)
    )
    return run


def purge(on_batch=None, **raw):
    run = create_run("purge_history", {"older_than_days": 90, **raw}, trigger="cli")
    return execute(run, on_batch=on_batch)


def purged(**raw):
    run = purge(**raw)
    assert run.status == Status.SUCCEEDED, run.error
    return run


def history():
    """The ids of the runs there are, but purges."""
    return set(
        MaintenanceRun.objects.exclude(operation="purge_history").values_list("pk", flat=True)
    )


def ids(*runs):
    return {run.pk for run in runs}


def deleted_by(run):
    return sorted(i for batch in run.batch_log.all() for i in batch.changed_ids)


def test_old_runs_go_with_their_batches_and_findings_and_recent_ones_stay():
    old = record(ARCHIVE, days_ago=200, batches=3)
    old_xp = record(XP, days_ago=150, findings=[(XP_RULE, 1, True), (XP_RULE, 2, False)])
    recent = record(ARCHIVE, days_ago=1, batches=2)
    recent_xp = record(XP, days_ago=2, findings=[(XP_RULE, 3, True)])
    just_inside = record(ARCHIVE, days_ago=89.9, status=Status.FAILED, batches=1)

    run = purged()

    assert history() == ids(recent, recent_xp, just_inside)
    assert not Finding.objects.filter(run_id__in=ids(old, old_xp)).exists()
    assert not RunBatch.objects.filter(run_id__in=ids(old, old_xp)).exists()
    assert (Finding.objects.count(), RunBatch.objects.filter(run=recent).count()) == (1, 2)
    assert (run.changed, deleted_by(run)) == (2, sorted(ids(old, old_xp)))
    # It went through each run, finding and batch of the history it deleted.
    assert run.processed == run.total == 2 + 2 + 3


def test_each_operations_last_success_stays_however_old():
    for operation in (ARCHIVE, XP, VALIDATE):
        record(operation, days_ago=400)
    last_archive = record(ARCHIVE, days_ago=300)
    last_validation = record(VALIDATE, days_ago=290)
    failed_since = record(ARCHIVE, days_ago=200, status=Status.FAILED)
    # Latest by finish, as monitoring reads the last success: a long run counts then.
    finished_first = record(XP, days_ago=300)
    long_run = record(XP, days_ago=350, took=timedelta(days=200))
    last_dry = record(ARCHIVE, days_ago=250, dry_run=True)
    record(ARCHIVE, days_ago=260, dry_run=True)

    purged()

    assert history() == ids(last_archive, last_validation, long_run, last_dry)
    assert not MaintenanceRun.objects.filter(pk__in=ids(failed_since, finished_first))


def test_a_purges_own_last_success_stays():
    previous = record("purge_history", days_ago=100, params={"older_than_days": 90})

    run = purged()

    assert MaintenanceRun.objects.filter(pk__in=ids(previous, run)).count() == 2


def test_open_findings_and_their_runs_stay_fixed_and_older_ones_go():
    older = record(VALIDATE, days_ago=300, findings=[(TRAIT, 1, False), (TRAIT, 2, True)])
    attempt = record(VALIDATE, days_ago=210, status=Status.FAILED, findings=[(TRAIT, 4, False)])
    latest = record(
        VALIDATE, days_ago=200, findings=[(TRAIT, 3, False), (TRAIT, 5, True)], resumed_from=attempt
    )
    failed_after = record(
        VALIDATE, days_ago=190, status=Status.FAILED, findings=[(TRAIT, 6, False)]
    )
    # The latest check of a rule over one chronicle is what its next check compares with.
    scoped_older = record(
        VALIDATE, days_ago=260, params=params_of(VALIDATE, 7, [TRAIT]), findings=[(TRAIT, 8, False)]
    )
    scoped = record(
        VALIDATE, days_ago=250, params=params_of(VALIDATE, 7, [TRAIT]), findings=[(TRAIT, 9, False)]
    )
    other_rule = record(
        VALIDATE, days_ago=255, params=params_of(VALIDATE, 7, [POST]), findings=[(POST, 1, False)]
    )
    # An xp check before the latest validation (which checks xp too) is history.
    old_xp = record(XP, days_ago=280, findings=[(XP_RULE, 1, False)])
    last_xp = record(XP, days_ago=270)
    before = open_findings()

    purged()

    assert history() == ids(latest, attempt, scoped, other_rule, last_xp)
    assert set(Finding.objects.values_list("run__pk", "object_id")) == {
        (latest.pk, 3),
        (latest.pk, 5),  # a kept run keeps all its findings
        (attempt.pk, 4),
        (scoped.pk, 9),
        (other_rule.pk, 1),
    }
    assert open_findings() == before and before["open"] == 2
    assert not MaintenanceRun.objects.filter(pk__in=ids(older, failed_after, scoped_older, old_xp))


def test_unfinished_runs_stay_however_old():
    unfinished = [
        record(ARCHIVE, days_ago=300, status=Status.RUNNING),
        record(XP, days_ago=300, status=Status.PAUSED),
        record(VALIDATE, days_ago=300, status=Status.QUEUED),
        record(REVERT, days_ago=300, status=Status.INTERRUPTED, params={"run_id": 10**9}),
    ]
    gone = [record(op, days_ago=300, status=Status.FAILED) for op in (ARCHIVE, XP, VALIDATE)]
    gone += [record(ARCHIVE, days_ago=300, status=s) for s in (Status.CANCELLED, Status.SKIPPED)]

    run = purged()

    assert history() == ids(*unfinished)
    assert run.changed == len(gone)


def test_the_run_a_paused_revert_works_on_stays_with_its_chain():
    failed = record(ARCHIVE, days_ago=301, status=Status.FAILED)
    source = record(ARCHIVE, days_ago=300, resumed_from=failed)
    record(ARCHIVE, days_ago=10)  # the last success: the source is not kept for that
    revert = record(REVERT, days_ago=1, status=Status.PAUSED, params={"run_id": source.pk})

    purged()

    assert ids(failed, source, revert) <= history()


def test_the_chain_a_recent_run_resumed_is_kept():
    first = record(VALIDATE, days_ago=120, status=Status.FAILED, findings=[(TRAIT, 1, False)])
    second = record(VALIDATE, days_ago=100, status=Status.FAILED, resumed_from=first)
    resumer = record(VALIDATE, days_ago=1, status=Status.FAILED, resumed_from=second)
    record(VALIDATE, days_ago=0.5)

    purged()

    assert ids(first, second, resumer) <= history()
    assert MaintenanceRun.objects.get(pk=resumer.pk).resumed_from_id == second.pk


def test_failed_runs_a_trigger_may_still_resume_stay(settings):
    settings.MAINTENANCE_RESUME_WINDOW_HOURS = 24 * 30
    resumable = record(ARCHIVE, days_ago=20, status=Status.FAILED)
    too_old = record(ARCHIVE, days_ago=40, status=Status.FAILED)
    record(ARCHIVE, days_ago=1)

    purged(older_than_days=7)

    assert resumable.pk in history() and too_old.pk not in history()


def test_a_skipped_run_that_stays_loses_only_its_link_to_a_deleted_holder():
    holder = record(ARCHIVE, days_ago=100, status=Status.FAILED)
    skipped = record(ARCHIVE, days_ago=1, status=Status.SKIPPED)
    MaintenanceRun.objects.filter(pk=skipped.pk).update(skipped_because_of=holder)

    purged()

    assert history() == ids(skipped)
    assert MaintenanceRun.objects.get(pk=skipped.pk).skipped_because_of is None


def test_runs_of_other_versions_are_history_like_any():
    gone = record("retired_operation", days_ago=300, params={"whatever": 1})
    odd = record(VALIDATE, days_ago=300, params={}, findings=[(TRAIT, 1, False)])
    last = record(VALIDATE, days_ago=1, params=params_of(VALIDATE, rules=[TRAIT]))

    purged()  # the other rules' previous check is looked for down to `odd`

    assert history() == ids(gone, last)  # each the last success of its operation
    assert odd.pk not in history()


def test_partitions_go_with_their_run():
    old = record(ARCHIVE, days_ago=200)
    RunPartition.objects.create(run=old, number=1, status=Status.SUCCEEDED)
    record(ARCHIVE, days_ago=1)

    purged()

    assert not RunPartition.objects.exists()


def test_a_batch_holds_runs_by_the_rows_that_go_with_them():
    light = record(XP, days_ago=200, findings=[(XP_RULE, 1, True)])  # 2 rows
    heavy = record(XP, days_ago=199, findings=[(XP_RULE, i, True) for i in range(10)])  # 11
    empty = [record(XP, days_ago=198), record(XP, days_ago=197)]  # 1 each
    record(XP, days_ago=1)

    run = purged(batch_size=5)

    assert [b.changed_ids for b in run.batch_log.order_by("number")] == [
        [light.pk],
        [heavy.pk],  # alone: a run is never split
        [empty[0].pk, empty[1].pk],
    ]
    assert run.processed == 2 + 11 + 1 + 1


def snapshot_of_game_data():
    models = apps.get_app_config("chronicles").get_models(include_auto_created=True)
    return {model._meta.label: list(model.objects.order_by("pk").values()) for model in models}


def test_game_data_is_never_touched():
    call_command(
        "create_test_data", "--seed=3", "--scenes=40", "--characters=20", stdout=StringIO()
    )
    for _ in range(2):
        for operation in (VALIDATE, XP, ARCHIVE):
            execute(
                create_run(operation, {"fix": True} if operation == VALIDATE else {}, trigger="cli")
            )
    MaintenanceRun.objects.update(created_at=timezone.now() - timedelta(days=200))
    before = snapshot_of_game_data()
    assert sum(map(len, before.values())) > 100

    run = purged()

    assert run.changed == 3  # the first run of each operation
    assert snapshot_of_game_data() == before


def recorded_history():
    own = {"run__operation": "purge_history"}
    return history(), Finding.objects.count(), RunBatch.objects.exclude(**own).count()


def test_a_dry_run_deletes_nothing_and_reports_what_would_go():
    for days in (300, 200, 100):
        record(VALIDATE, days_ago=days, findings=[(TRAIT, 1, False)], batches=1)
    before = recorded_history()

    dry = purged(dry_run=True)

    assert recorded_history() == before
    real = purged()
    assert (dry.changed, deleted_by(dry)) == (real.changed, deleted_by(real)) and real.changed == 2


def test_an_interrupted_purge_resumes_and_deletes_the_same_set():
    kept = record(ARCHIVE, days_ago=150)  # archive's last success, at the purge's start
    doomed = [record(ARCHIVE, days_ago=300 - i, findings=[(TRAIT, i, True)]) for i in range(6)]
    planned = deleted_by(purged(dry_run=True))

    def stop_after_the_first(report):
        raise RuntimeError("worker lost")

    first = purge(on_batch=stop_after_the_first, batch_size=4)
    assert first.status == Status.FAILED and first.changed == 2
    record(ARCHIVE, days_ago=0.1)  # a fresh purge would now delete `kept` too
    second = purged(batch_size=4)

    assert second.resumed_from_id == first.pk
    assert second.checkpoint["context"] == first.checkpoint["context"]
    assert sorted(deleted_by(first) + deleted_by(second)) == planned == sorted(ids(*doomed))
    assert kept.pk in history()


def test_a_run_retried_while_the_purge_runs_stays():
    record(ARCHIVE, days_ago=1)
    first = [record(ARCHIVE, days_ago=300, status=Status.FAILED) for _ in range(2)]
    retried = record(ARCHIVE, days_ago=299, status=Status.FAILED)

    def retry_it(report):
        if report.number == 1:
            assert MaintenanceRun.objects.filter(pk=retried.pk).retry() == 1

    run = purge(on_batch=retry_it, batch_size=2)

    assert run.status == Status.SUCCEEDED and deleted_by(run) == sorted(ids(*first))
    assert MaintenanceRun.objects.get(pk=retried.pk).status == Status.QUEUED


def test_it_cannot_be_reverted_applied_or_given_a_bad_age():
    run = purged()
    dry = purged(dry_run=True)
    record(ARCHIVE, days_ago=200)
    record(ARCHIVE, days_ago=1)
    dry_that_planned = purged(dry_run=True)

    with pytest.raises(ParameterError, match="cannot be reverted"):
        create_run(REVERT, {"run_id": run.pk}, trigger="cli")
    with pytest.raises(ParameterError, match="cannot be applied"):
        create_run("apply_run", {"run_id": dry_that_planned.pk}, trigger="cli")
    assert dry.changed == 0
    for bad in (0, -1, "x"):
        with pytest.raises(ParameterError, match="older_than_days"):
            create_run("purge_history", {"older_than_days": bad}, trigger="cli")


def test_the_command_line_takes_older_than_days():
    old = record(ARCHIVE, days_ago=40)
    record(ARCHIVE, days_ago=1)
    out = StringIO()

    call_command(
        "run_maintenance",
        "purge_history",
        "--older-than-days",
        "30",
        "--inline",
        "--json",
        stdout=out,
    )

    summary = json.loads(out.getvalue())
    assert (summary["status"], summary["params"], summary["changed"]) == (
        "succeeded",
        {"older_than_days": 30},
        1,
    )
    assert old.pk not in history()


def monitor():
    out = StringIO()
    with contextlib.suppress(SystemExit):  # a warning (no heartbeat here): the report counts
        call_command("monitor_validation", "--json", stdout=out)
    return json.loads(out.getvalue())["operations"]


def test_monitoring_sees_the_same_last_successes_and_no_overdue_purge():
    seed()
    for operation in (ARCHIVE, XP, VALIDATE):
        record(operation, days_ago=200)
        record(operation, days_ago=0.01, took=timedelta(seconds=30))
    before = monitor()

    purged()
    after = monitor()

    for operation in (ARCHIVE, XP, VALIDATE):
        assert after[operation]["last_success_at"] == before[operation]["last_success_at"]
        assert after[operation]["overdue"] is False
    assert after["purge_history"]["overdue"] is False
    assert after["purge_history"]["schedules"] == ["Purge run history (weekly)"]
    assert after["purge_history"]["status"] == "OK"


def test_a_weekly_purge_that_has_not_succeeded_for_over_a_week_is_overdue():
    seed()
    record("purge_history", days_ago=8.5, params={"older_than_days": 90})

    assert monitor()["purge_history"]["overdue"] is True


# --- the keep rules over random histories ---

OPERATIONS = (ARCHIVE, VALIDATE, VALIDATE, XP, REVERT)
STATUSES = (
    ("succeeded",) * 4
    + ("failed", "failed", "cancelled", "skipped")
    + (
        "queued",
        "paused",
        "interrupted",
    )
)
RUNS = st.lists(
    st.fixed_dictionaries(
        {
            "operation": st.sampled_from(OPERATIONS),
            "status": st.sampled_from(STATUSES),
            "days_ago": st.integers(0, 150),
            "took_hours": st.integers(0, 24 * 40),
            "dry_run": st.booleans(),
            "scope": st.sampled_from([None, None, 7]),
            "rules": st.sampled_from([[TRAIT], [TRAIT, XP_RULE], [POST], None]),
            "findings": st.lists(st.tuples(st.integers(1, 3), st.booleans()), max_size=3),
            "earlier": st.none() | st.integers(0, 20),  # resumed from (revert: works on)
        }
    ),
    min_size=3,
    max_size=14,
)


def checked_by(operation: str, params: dict) -> list[str]:
    if operation == VALIDATE:
        return params["rules"]
    return [XP_RULE] if operation == XP else []


def checked(run: MaintenanceRun) -> list[str]:
    return checked_by(run.operation, run.params)


def build(spec: dict, index: int, runs: list, now: datetime) -> MaintenanceRun:
    earlier = (
        runs[spec["earlier"]] if spec["earlier"] is not None and spec["earlier"] < index else None
    )
    operation = spec["operation"]
    params = params_of(operation, spec["scope"], spec["rules"], earlier.pk if earlier else 10**6)
    age = timedelta(days=spec["days_ago"], seconds=index)  # no two runs created at once
    took = timedelta(hours=spec["took_hours"], microseconds=index)  # nor finished at once
    rules = checked_by(operation, params)
    return record(
        operation,
        days_ago=age,
        status=spec["status"],
        took=took,
        dry_run=spec["dry_run"],
        params=params,
        # Only the rules a run checks have findings of it.
        findings=[(rules[i % len(rules)], i, fixed) for i, fixed in spec["findings"] if rules],
        resumed_from=earlier if operation != REVERT else None,
        now=now,
    )


def newest(runs, key):
    return max(runs, key=key) if runs else None


def expected_survivors(runs: list[MaintenanceRun], cutoff: datetime, now: datetime) -> set:
    """The keep rules, worked out from the histories' own records."""
    by_pk = {run.pk: run for run in runs}

    def chain(pk):
        while pk is not None and pk in by_pk:
            yield pk
            pk = by_pk[pk].resumed_from_id

    unfinished = [run for run in runs if run.status not in FINISHED]
    succeeded = [run for run in runs if run.status == Status.SUCCEEDED]
    roots = {run.pk for run in unfinished}
    roots |= {run.params["run_id"] for run in unfinished if run.operation == REVERT}
    for operation, dry_run in {(run.operation, run.dry_run) for run in succeeded}:
        same = [r for r in succeeded if (r.operation, r.dry_run) == (operation, dry_run)]
        roots.add(newest(same, key=lambda r: r.finished_at).pk)
    validation = newest(
        [r for r in succeeded if r.operation == VALIDATE and not r.dry_run],
        key=lambda r: r.finished_at,
    )
    if validation is not None:
        roots.add(validation.pk)
    for rule in ALL_RULES:
        for scope in (None, 7):
            checks = [
                r for r in succeeded if rule in checked(r) and r.params["chronicle_id"] == scope
            ]
            if checks:
                roots.add(newest(checks, key=lambda r: r.created_at).pk)
    roots |= {
        run.pk
        for run in runs
        if run.status == Status.FAILED and run.created_at >= now - timedelta(hours=24)
    }
    roots |= {
        run.pk
        for run in runs
        if run.created_at >= cutoff
        and run.resumed_from_id
        and by_pk[run.resumed_from_id].created_at < cutoff
    }
    kept = {pk for root in roots for pk in chain(root)}
    young = {run.pk for run in runs if run.created_at >= cutoff or run.status not in FINISHED}
    return young | kept


@settings(HYPOTHESIS, max_examples=100)
@given(
    specs=RUNS,
    older_than_days=st.integers(1, 120),
    batch_size=st.integers(1, 6),
    dry_run=st.booleans(),
)
def test_the_keep_rules_hold_over_random_histories(specs, older_than_days, batch_size, dry_run):
    MaintenanceRun.objects.all().delete()
    now = timezone.now()
    runs: list[MaintenanceRun] = []
    for index, spec in enumerate(specs):
        runs.append(build(spec, index, runs, now))
    findings = dict(findings_per_run())
    open_before = open_findings()

    run = purged(older_than_days=older_than_days, batch_size=batch_size, dry_run=dry_run)

    cutoff = datetime.fromisoformat(run.checkpoint["context"]["cutoff"])
    expected = expected_survivors(runs, cutoff, cutoff + timedelta(days=older_than_days))
    planned = set(deleted_by(run))
    assert planned == ids(*runs) - expected
    assert history() == (ids(*runs) if dry_run else expected)
    for pk, count in findings_per_run():
        assert count == findings.get(pk, 0)  # a run stays whole
    assert open_findings() == open_before


def findings_per_run():
    return MaintenanceRun.objects.values_list("pk").annotate(n=Count("finding_set"))
