"""Findings over time: fingerprints, first seen, new / resolved / open against the
previous complete run that checked the same rule over the same rows, and what
monitor_validation makes of them. SQLite and PostgreSQL."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicles.models import Character
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import Finding, MaintenanceRun
from tests import factories
from tests.properties import HYPOTHESIS

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status
TRAIT = "character_trait_out_of_range"


def characters(count, chronicle=None):
    return [
        Character.objects.create(name=f"c{i}", willpower=5, chronicle=chronicle).pk
        for i in range(count)
    ]


def break_(ids):
    Character.objects.filter(pk__in=ids).update(willpower=20)


def heal(ids):
    Character.objects.filter(pk__in=ids).update(willpower=5)


def validate(**raw):
    run = execute(
        create_run(
            "validate_data_integrity", {"rules": [TRAIT], **raw}, trigger=MaintenanceRun.Trigger.CLI
        )
    )
    assert run.status == Status.SUCCEEDED, run.error
    return run


def trend(run):
    return run.findings_new, run.findings_resolved, run.findings_open


def test_the_first_run_finds_everything_new_and_the_next_the_same_problems_still_open():
    ids = characters(6)
    break_(ids[:4])
    first = validate()
    assert trend(first) == (4, 0, 4)

    second = validate(batch_size=3)
    assert trend(second) == (0, 0, 4)
    earlier = dict(first.finding_set.values_list("fingerprint", "first_seen_at"))
    for finding in second.finding_set.all():
        assert finding.fingerprint == f"{TRAIT}:chronicles.Character:{finding.object_id}"
        assert finding.first_seen_at == earlier[finding.fingerprint]  # seen first then
        assert finding.first_seen_at < finding.created_at


def test_resolved_by_hand_by_a_fix_and_new_ones_are_counted():
    ids = characters(8)
    break_(ids[:4])
    validate()
    heal(ids[:1])  # resolved by hand
    break_(ids[6:])  # two new problems
    second = validate()
    assert trend(second) == (2, 1, 5)

    fix = validate(fix=True)
    assert trend(fix) == (0, 5, 0)  # found and fixed: none open after it
    assert fix.finding_set.filter(fixed=True).count() == 5
    assert trend(validate()) == (0, 0, 0)


def test_a_dry_run_counts_as_what_it_saw():
    ids = characters(3)
    break_(ids)
    validate()
    preview = validate(fix=True, dry_run=True)
    assert trend(preview) == (0, 0, 3)  # a preview fixes nothing: all still open


def test_only_a_run_over_the_same_rows_and_rule_is_the_run_before():
    chronicle = factories.chronicle()
    inside = characters(2, chronicle)
    outside = characters(2)
    break_(inside + outside)
    validate(chronicle_id=chronicle.pk)
    whole = validate()
    assert trend(whole) == (4, 0, 4)  # the chronicle's run covered other rows
    other_rule = validate(rules=["character_without_owner"])
    assert other_rule.findings_resolved == 0
    assert trend(validate()) == (0, 0, 4)  # compared with `whole`, not `other_rule`


def test_recalculate_xp_and_validation_compare_on_the_xp_rule():
    ids = characters(3)
    Character.objects.filter(pk__in=ids[:2]).update(xp=7)  # no ledger: should be 0
    recalc = execute(create_run("recalculate_xp", {"dry_run": True}, trigger="cli"))
    assert trend(recalc) == (2, 0, 2)
    checked = validate(rules=["character_xp_mismatch"])
    assert trend(checked) == (0, 0, 2)


def test_runs_that_check_no_rules_have_no_trend():
    factories.scene()
    archive = execute(create_run("archive_old_scenes", {}, trigger="cli"))
    assert trend(archive) == (None, None, None)


def test_the_json_and_the_report_say_it():
    break_(characters(2))
    out = StringIO()
    call_command(
        "run_maintenance", "validate_data_integrity", "--rules", TRAIT, "--inline", "--json",
        stdout=out,
    )  # fmt: skip
    summary = json.loads(out.getvalue())
    assert (summary["findings_new"], summary["findings_resolved"]) == (2, 0)
    assert summary["findings_open"] == 2
    out = StringIO()
    call_command(
        "run_maintenance", "validate_data_integrity", "--rules", TRAIT, "--inline", stdout=out
    )
    assert "findings: 0 new, 0 resolved since the run before, 2 open" in out.getvalue()


def monitor(settings, limit):
    settings.MAINTENANCE_NEW_FINDINGS_WARNING = limit
    out = StringIO()
    try:
        call_command("monitor_validation", "--json", stdout=out)
        code = 0
    except SystemExit as stop:
        code = stop.code
    report = json.loads(out.getvalue())
    check = next(c for c in report["checks"] if c["name"] == "new_findings")
    return code, check, report["findings"]


def test_monitor_validation_warns_when_too_many_findings_appeared(settings):
    break_(characters(5))
    validate()
    code, check, findings = monitor(settings, limit=4)
    assert check["status"] == "WARNING" and "5 new" in check["detail"]
    assert findings["new_in_period"] == 5 and findings["by_rule"] == {TRAIT: 5}
    assert code >= 1
    code, check, _ = monitor(settings, limit=5)
    assert check["status"] == "OK"


# What a run's counts must be, from sets: the model the property test checks against.
def expected(history):
    """[(found, fixed)] per run -> [(new, resolved, open)]."""
    results, open_before = [], None
    for found, fixed in history:
        open_now = found - fixed
        if open_before is None:
            results.append((len(found), 0, len(open_now)))
        else:
            results.append((len(found - open_before), len(open_before - open_now), len(open_now)))
        open_before = open_now
    return results


@settings(HYPOTHESIS, max_examples=20)
@given(
    steps=st.lists(
        st.tuples(st.sets(st.integers(0, 9)), st.booleans(), st.integers(1, 4)),
        min_size=1,
        max_size=5,
    )
)
def test_new_resolved_and_open_follow_the_sets_of_problems(steps):
    """Any sequence of broken sets, fixes and batch sizes: the counts are the set
    differences of open problems between consecutive runs."""
    MaintenanceRun.objects.all().delete()
    Character.objects.all().delete()
    ids = characters(10)
    history, runs = [], []
    for broken, fix, batch in steps:
        heal(ids)
        break_([ids[i] for i in broken])
        run = validate(fix=fix, batch_size=batch)
        found = set(run.finding_set.values_list("object_id", flat=True))
        fixed = set(run.finding_set.filter(fixed=True).values_list("object_id", flat=True))
        assert found == {ids[i] for i in broken}
        history.append((found, fixed))
        runs.append(run)
    assert [trend(run) for run in runs] == expected(history)
    assert Finding.objects.filter(fingerprint="").count() == 0


@pytest.mark.django_db(transaction=True)
def test_findings_recorded_before_fingerprints_get_them_from_the_migration():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("maintenance", "0006_partitions")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        run = old.get_model("maintenance", "MaintenanceRun").objects.create(
            operation="validate_data_integrity", trigger="beat", params={}
        )
        finding = old.get_model("maintenance", "Finding").objects.create(
            run_id=run.pk, rule=TRAIT, model="chronicles.Character", object_id=42, message="m"
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    migrated = Finding.objects.get(pk=finding.pk)
    assert migrated.fingerprint == f"{TRAIT}:chronicles.Character:42"
    assert migrated.first_seen_at == migrated.created_at
