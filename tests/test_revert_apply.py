"""Revert a run and apply a reviewed dry run: the game data comes back exactly as it was,
except rows changed in between, each reported; an applied plan equals the run it
previewed. SQLite and PostgreSQL; hostile run ids and refusals through the command."""

import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry
from chronicles.testdata.generator import Options, generate
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import Finding, MaintenanceRun
from maintenance.operations.base import ParameterError
from tests import factories
from tests.properties import HYPOTHESIS

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GAME = (Chronicle, Character, Scene, Post, XPEntry)


def snapshot(*, without=()):
    """Every game row, every column, by model and id."""
    return {
        model.__name__: {
            row["id"]: {k: v for k, v in row.items() if k not in without}
            for row in model.objects.order_by("id").values()
        }
        for model in GAME
    }


def run(operation, **raw):
    done = execute(create_run(operation, raw, trigger=MaintenanceRun.Trigger.CLI))
    assert done.status == Status.SUCCEEDED, done.error
    return done


def revert(run_id, **raw):
    return run("revert_run", run_id=run_id, **raw)


def conflicts(done, rule="revert_conflict"):
    return {(f.model, f.object_id) for f in Finding.objects.filter(run=done, rule=rule).order_by()}


@pytest.fixture
def planted():
    generate(Options(seed=8, chronicles=3, characters=90, scenes=160, defect_rate=0.08, now=NOW))


# --- revert ---------------------------------------------------------------------------


def test_fix_then_revert_gives_back_the_data_as_it_was(planted):
    before = snapshot()
    fix = run("validate_data_integrity", fix=True, batch_size=7)
    assert fix.changed > 10

    undo = revert(fix.pk, batch_size=5)

    assert snapshot() == before  # updated_at included: every column the fix wrote
    assert undo.changed == fix.changed and not conflicts(undo)
    assert set(undo.finding_set.values_list("rule", flat=True)) == {"revert_restored"}


def test_rows_changed_in_between_are_conflicts_and_keep_their_new_values(planted):
    before = snapshot()
    fix = run("validate_data_integrity", fix=True)
    fixed = list(fix.finding_set.filter(fixed=True, model="chronicles.Character"))
    touched = {f.object_id for f in fixed[:3]}
    for character in Character.objects.filter(pk__in=touched):
        character.name = "renamed by a player"  # save() moves updated_at too
        character.save()
    scene_fix = fix.finding_set.filter(fixed=True, model="chronicles.Scene").first()
    Scene.objects.filter(pk=scene_fix.object_id).update(name="renamed", archived_at=None)
    changed_scene = Scene.objects.get(pk=scene_fix.object_id)
    after_changes = snapshot()

    undo = revert(fix.pk)

    now = snapshot()
    expected_conflicts = {("chronicles.Character", pk) for pk in touched}
    if (scene_fix.after or {}) != {"archived_at": None}:
        expected_conflicts.add(("chronicles.Scene", scene_fix.object_id))
    assert conflicts(undo) == expected_conflicts
    for model, pk in expected_conflicts:
        name = model.split(".")[1]
        assert now[name][pk] == after_changes[name][pk]  # left as the player left it
    for name, rows in before.items():
        for pk, row in rows.items():
            if (f"chronicles.{name}", pk) not in expected_conflicts and not (
                name == "Scene" and pk == changed_scene.pk
            ):
                assert now[name][pk] == row, (name, pk)
    message = undo.finding_set.filter(rule="revert_conflict").first().message
    assert f"changed since run #{fix.pk}" in message and "left as it is" in message


def test_a_revert_can_be_reverted(planted):
    fix = run("validate_data_integrity", fix=True)
    fixed_state = snapshot()
    undo = revert(fix.pk)
    redo = revert(undo.pk)
    assert snapshot() == fixed_state
    assert redo.changed == undo.changed == fix.changed


def test_recalculated_xp_is_reverted(planted):
    before = snapshot()
    recalc = run("recalculate_xp", batch_size=11)
    assert recalc.changed
    revert(recalc.pk)
    assert snapshot() == before


def test_archive_then_revert(settings):
    scenes = [factories.scene(name=f"old{i}").pk for i in range(40)]
    factories.scene(name="recent", created_days_ago=1)
    before = snapshot()
    archive = run("archive_old_scenes", batch_size=6)
    assert archive.changed == 40
    # A storyteller unarchives one by hand, and archives another anew.
    Scene.objects.filter(pk=scenes[0]).update(archived_at=None)
    Scene.objects.filter(pk=scenes[1]).update(archived_at=timezone.now())

    undo = revert(archive.pk, batch_size=7)

    assert undo.changed == 38
    assert conflicts(undo) == {("chronicles.Scene", scenes[0]), ("chronicles.Scene", scenes[1])}
    now = snapshot()
    assert now["Scene"][scenes[0]]["archived_at"] is None
    assert now["Scene"][scenes[1]]["archived_at"] is not None
    for pk in scenes[2:]:
        assert now["Scene"][pk] == before["Scene"][pk]


def test_a_dry_run_revert_changes_nothing_and_says_what_it_would(planted):
    fix = run("validate_data_integrity", fix=True)
    fixed_state = snapshot()
    preview = revert(fix.pk, dry_run=True)
    assert snapshot() == fixed_state
    assert preview.changed == fix.changed
    assert not preview.finding_set.filter(fixed=True).exists()
    applied = run("apply_run", run_id=preview.pk)  # and its plan can be applied
    assert applied.changed == fix.changed
    assert snapshot() != fixed_state


# --- apply ----------------------------------------------------------------------------


def test_apply_equals_the_run_the_dry_run_previewed_with_changes_in_between(planted):
    # The run the dry run previews, made and undone, to compare with.
    start = snapshot(without=("updated_at",))
    previewed = run("validate_data_integrity", fix=True)
    fixed = snapshot(without=("updated_at",))
    revert(previewed.pk)
    assert snapshot(without=("updated_at",)) == start

    dry = run("validate_data_integrity", fix=True, dry_run=True)
    assert dry.changed == previewed.changed
    planned = list(dry.finding_set.filter(after__isnull=False).order_by("id"))
    # In between: a player gives a planned character legal traits (what its fix would
    # write is no longer right), a post lands in a planned scene.
    character = next(f for f in planned if f.rule == "character_trait_out_of_range")
    Character.objects.filter(pk=character.object_id).update(willpower=4, temporary_willpower=2)
    stale = next((f for f in planned if f.rule == "scene_activity_stale"), None)
    if stale:
        Post.objects.create(scene_id=stale.object_id, message="late", created_at=timezone.now())
    changed_rows = {("chronicles.Character", character.object_id)}
    if stale:
        changed_rows.add(("chronicles.Scene", stale.object_id))
    between = snapshot(without=("updated_at",))

    applied = run("apply_run", run_id=dry.pk)

    assert conflicts(applied, "apply_conflict") == changed_rows
    now = snapshot(without=("updated_at",))
    for name, rows in fixed.items():
        for pk, row in rows.items():
            if (f"chronicles.{name}", pk) in changed_rows:
                assert now[name][pk] == between[name][pk]
            elif pk in now[name]:
                assert now[name][pk] == row, (name, pk)
    assert applied.changed == previewed.changed - len(
        [f for f in planned if (f.model, f.object_id) in changed_rows]
    )
    # What the apply wrote is recorded like a fix: it can be reverted.
    revert(applied.pk)
    assert snapshot(without=("updated_at",)) == between


def test_apply_an_archive_plan_archives_exactly_the_listed_scenes():
    old = [factories.scene(name=f"old{i}").pk for i in range(12)]
    dry = run("archive_old_scenes", dry_run=True, batch_size=5)
    late = factories.scene(name="old but after the dry run")  # not in the plan
    Post.objects.create(scene_id=old[3], message="back to life", created_at=timezone.now())

    applied = run("apply_run", run_id=dry.pk, batch_size=4)

    archived = set(Scene.objects.filter(archived_at__isnull=False).values_list("pk", flat=True))
    assert archived == set(old) - {old[3]}
    assert late.pk not in archived
    assert conflicts(applied, "apply_conflict") == {("chronicles.Scene", old[3])}
    revert(applied.pk)
    assert not Scene.objects.filter(archived_at__isnull=False).exists()


# --- refusals -------------------------------------------------------------------------


def maintenance_run(*args):
    out, err = StringIO(), StringIO()
    call_command("maintenance_run", *args, stdout=out, stderr=err)
    return out.getvalue()


def refused(*args):
    with pytest.raises(CommandError) as raised:
        maintenance_run(*args)
    assert raised.value.returncode == 2
    assert "\n" not in str(raised.value)
    return str(raised.value)


def test_what_cannot_be_reverted_or_applied_is_refused_with_one_line(planted, tmp_path):
    dry = run("validate_data_integrity", fix=True, dry_run=True)
    real = run("validate_data_integrity", fix=True)
    running = MaintenanceRun.objects.create(
        operation="archive_old_scenes", trigger="cli", status=Status.RUNNING, changed=3
    )
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    report_only = run("validate_data_integrity")
    runs_before = MaintenanceRun.objects.count()

    assert "is a dry run" in refused("revert", str(dry.pk), "--inline")
    assert f"is {Status.RUNNING}" in refused("revert", str(running.pk), "--inline")
    assert "no run #" in refused("revert", "999999", "--inline")
    assert "changed nothing" in refused("revert", str(report_only.pk), "--inline")
    assert "not a dry run" in refused("apply", str(real.pk), "--inline")
    assert "cannot be split" in refused("revert", str(real.pk), "--inline", "--partitions", "2")
    for hostile in ("-1", "0", "1.5", "x", "9" * 30, "\x00", "١"):
        refused("revert", hostile, "--inline")
    assert MaintenanceRun.objects.count() == runs_before  # nothing recorded

    imported = MaintenanceRun.objects.create(
        operation="import_characters", trigger="cli", status=Status.SUCCEEDED, changed=4
    )
    assert "cannot be reverted" in refused("revert", str(imported.pk), "--inline")
    maintenance_run("revert", str(real.pk), "--inline")
    assert "already reverted" in refused("revert", str(real.pk), "--inline")


def test_revert_json_and_its_exit_code(planted):
    fix = run("validate_data_integrity", fix=True)
    summary = json.loads(maintenance_run("revert", str(fix.pk), "--inline", "--json"))
    assert summary["operation"] == "revert_run" and summary["status"] == "succeeded"
    assert summary["params"] == {"run_id": fix.pk}
    assert summary["changed"] == fix.changed


@settings(HYPOTHESIS, max_examples=12)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 40),
    touch=st.lists(st.integers(0, 200), max_size=6),
    operation=st.sampled_from(["validate_data_integrity", "recalculate_xp"]),
)
def test_revert_restores_everything_but_what_changed_since(seed, batch, touch, operation):
    """Any data, any batch size, any rows changed in between: the revert restores every
    other row exactly and reports each changed one."""
    MaintenanceRun.objects.all().delete()
    for model in reversed(GAME):
        model.objects.all().delete()
    generate(Options(seed=seed, chronicles=2, characters=40, scenes=40, defect_rate=0.2, now=NOW))
    before = snapshot()
    fix = run(operation, batch_size=batch, **({"fix": True} if "validate" in operation else {}))
    fixed = list(fix.finding_set.filter(fixed=True).order_by("id"))
    changed = set()
    for index in touch:
        if fixed:
            finding = fixed[index % len(fixed)]
            if finding.model == "chronicles.Character":
                Character.objects.filter(pk=finding.object_id).update(name=f"edited {index}")
                Character.objects.filter(pk=finding.object_id).update(updated_at=timezone.now())
                changed.add(("chronicles.Character", finding.object_id))

    undo = revert(fix.pk, batch_size=batch)

    assert conflicts(undo) == changed
    now = snapshot()
    for name, rows in before.items():
        for pk, row in rows.items():
            if (f"chronicles.{name}", pk) not in changed:
                assert now[name][pk] == row, (name, pk)


def test_parameter_validation_refuses_a_revert_of_an_unfinished_run():
    queued = MaintenanceRun.objects.create(operation="recalculate_xp", trigger="cli")
    with pytest.raises(ParameterError, match="only a finished run"):
        create_run("revert_run", {"run_id": queued.pk}, trigger="cli")


def test_a_partitioned_run_is_reverted_whole_and_its_trend_comes_with_its_last_partition(
    planted,
):
    before = snapshot()
    split = run("validate_data_integrity", fix=True, partitions=3, batch_size=9)
    assert split.partition_set.count() == 3
    assert split.findings_new == split.findings and split.findings_resolved == 0
    assert split.findings_open == split.finding_set.filter(fixed=False).count()

    undo = revert(split.pk)
    assert snapshot() == before and undo.changed == split.changed

    for i in range(30):
        factories.scene(name=f"old{i}")
    before_archive = snapshot()
    archive = run("archive_old_scenes", partitions=4, batch_size=4)
    assert archive.changed >= 30
    revert(archive.pk, batch_size=7)
    assert snapshot() == before_archive


@pytest.mark.django_db(transaction=True)
def test_two_reverts_of_one_run_recorded_at_once_give_one_run(postgresql, planted):
    """The check "not reverted yet" and the new run's row commit together, under a lock
    on the run to revert: of ten simultaneous requests, one is recorded."""
    import threading

    from django.db import connection as default_connection

    fix = run("validate_data_integrity", fix=True)
    barrier, outcomes = threading.Barrier(10), []

    def request():
        try:
            barrier.wait()
            create_run("revert_run", {"run_id": fix.pk}, trigger="cli")
            outcomes.append("recorded")
        except ParameterError as refused:
            outcomes.append(str(refused))
        finally:
            default_connection.close()

    threads = [threading.Thread(target=request) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert outcomes.count("recorded") == 1, outcomes
    assert all("already reverted" in o for o in outcomes if o != "recorded")
    assert MaintenanceRun.objects.filter(operation="revert_run").count() == 1


def test_a_dry_run_revert_of_rows_fixed_by_several_rules_plans_what_the_revert_does():
    """One character broken three ways, fixed by three rules in three batches: the dry
    run of its revert, whose batches write nothing, still plans each restore against
    what the earlier ones would have written; applying that plan is the revert."""
    chronicle = factories.chronicle()
    broken = Character.objects.create(
        name="thrice", chronicle=chronicle, owner=None, willpower=20, xp=9999
    )
    from django.contrib.auth import get_user_model

    chronicle.storytellers.add(get_user_model().objects.create_user("st"))
    before = snapshot()
    fix = run("validate_data_integrity", fix=True, batch_size=1)
    assert fix.finding_set.filter(object_id=broken.pk, fixed=True).count() == 3

    preview = revert(fix.pk, dry_run=True, batch_size=1)
    assert not conflicts(preview)
    assert preview.changed == fix.changed
    run("apply_run", run_id=preview.pk, batch_size=1)
    assert snapshot() == before
