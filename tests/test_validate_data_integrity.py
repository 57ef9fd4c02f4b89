"""validate_data_integrity: every rule finds exactly its problems, fixes repair and
record before/after, nothing is deleted, scoping and query counts hold."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry
from chronicles.testdata.generator import RULES as PLANTED_RULES
from chronicles.testdata.generator import Options, generate
from maintenance import operations
from maintenance.engine.iteration import RunContext
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import Finding, MaintenanceRun
from maintenance.operations.rules import RULES
from tests.oracle import violations

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REPORT_ONLY = {"scene_without_chronicle", "post_without_scene"}


def validate(**raw):
    return execute(create_run("validate_data_integrity", raw, trigger=MaintenanceRun.Trigger.CLI))


def found(run):
    by_rule = {}
    for rule, object_id in run.finding_set.values_list("rule", "object_id"):
        by_rule.setdefault(rule, []).append(object_id)
    return {rule: sorted(ids) for rule, ids in by_rule.items()}


def row_counts():
    models = (get_user_model(), Chronicle, Character, XPEntry, Scene, Post)
    return {model.__name__: model.objects.count() for model in models}


@pytest.fixture
def planted():
    return generate(
        Options(seed=21, chronicles=4, characters=150, scenes=300, defect_rate=0.05, now=NOW)
    )


def test_the_codes_are_those_of_the_design():
    assert list(RULES) == list(PLANTED_RULES)


def test_clean_data_has_no_findings():
    generate(Options(seed=4, chronicles=3, characters=80, scenes=200, defect_rate=0, now=NOW))

    run = validate(batch_size=37)

    assert run.status == "succeeded"
    assert run.findings == 0 and run.changed == 0
    assert run.processed == 80 * 3 + 200 * 3 + Post.objects.count()


def test_each_rule_finds_exactly_its_planted_problems(planted):
    run = validate(batch_size=40)

    assert found(run) == planted.planted
    assert run.findings == sum(len(ids) for ids in planted.planted.values())
    assert run.changed == 0
    assert not run.finding_set.filter(fixed=True).exists()


@pytest.mark.parametrize("rule", list(RULES))
def test_rules_can_be_chosen_one_by_one(planted, rule):
    run = validate(rules=[rule])

    assert found(run) == {rule: planted.planted[rule]}


def test_fix_repairs_all_it_can_and_deletes_nothing(planted):
    before = row_counts()

    fixed = validate(fix=True, batch_size=25)

    assert row_counts() == before
    unfixable = {
        "character_without_owner": planted.unfixable["character_without_owner"],
        "character_xp_mismatch": planted.unfixable["character_xp_mismatch"],
        **{rule: planted.planted[rule] for rule in REPORT_ONLY},
    }
    assert violations() == unfixable
    fixable_count = sum(len(ids) for ids in planted.planted.values()) - sum(
        len(ids) for ids in unfixable.values()
    )
    assert fixed.changed == fixable_count
    assert fixed.finding_set.filter(fixed=True).count() == fixable_count
    for finding in fixed.finding_set.filter(fixed=False):
        assert "cannot fix" in finding.message or "report only" in finding.message
        assert finding.after is None


def test_a_run_after_fix_finds_only_what_cannot_be_fixed(planted):
    validate(fix=True)

    again = validate(fix=True)

    assert again.changed == 0
    assert not again.finding_set.filter(fixed=True).exists()
    assert set(found(again)) <= {"character_without_owner", "character_xp_mismatch", *REPORT_ONLY}


def test_a_dry_run_fix_reports_what_the_real_fix_then_does(planted):
    snapshot = (
        list(Character.objects.order_by("id").values_list()),
        list(Scene.objects.order_by("id").values_list()),
    )

    dry = validate(fix=True, dry_run=True, batch_size=30)

    assert (
        list(Character.objects.order_by("id").values_list()),
        list(Scene.objects.order_by("id").values_list()),
    ) == snapshot
    real = validate(fix=True, batch_size=30)
    assert (dry.processed, dry.changed, dry.findings) == (
        real.processed,
        real.changed,
        real.findings,
    )
    order = ("rule", "object_id")
    plan = list(dry.finding_set.order_by(*order).values_list("rule", "object_id", "after"))
    done = list(real.finding_set.order_by(*order).values_list("rule", "object_id", "after"))
    assert plan == done


# --- each fix on hand-made rows --------------------------------------------------


def finding_for(run, rule, object_id):
    return Finding.objects.get(run=run, rule=rule, object_id=object_id)


def test_an_orphan_character_goes_to_the_first_storyteller():
    users = get_user_model().objects
    first, second = users.create(username="st1"), users.create(username="st2")
    chronicle = Chronicle.objects.create(name="C")
    chronicle.storytellers.add(second, first)
    orphan = Character.objects.create(name="Lost", chronicle=chronicle)
    stray = Character.objects.create(name="Stray")
    no_storyteller = Character.objects.create(
        name="Alone", chronicle=Chronicle.objects.create(name="Empty")
    )

    run = validate(fix=True, rules=["character_without_owner"])

    orphan.refresh_from_db()
    assert orphan.owner_id == min(first.id, second.id)
    finding = finding_for(run, "character_without_owner", orphan.id)
    assert finding.fixed and finding.before == {"owner_id": None}
    assert finding.after == {"owner_id": orphan.owner_id}
    assert "it has no chronicle" in finding_for(run, "character_without_owner", stray.id).message
    assert (
        "has no storyteller"
        in finding_for(run, "character_without_owner", no_storyteller.id).message
    )


@pytest.mark.parametrize(
    "traits, repaired",
    [
        ({"willpower": 0, "temporary_willpower": 0}, {"willpower": 1}),
        (
            {"willpower": 14, "temporary_willpower": 12},
            {"willpower": 10, "temporary_willpower": 10},
        ),
        ({"willpower": 5, "temporary_willpower": 7}, {"temporary_willpower": 5}),
        ({"willpower": 5, "temporary_willpower": -2}, {"temporary_willpower": 0}),
        ({"willpower": 5, "temporary_willpower": 3, "age": -4}, {"age": 0}),
        ({"willpower": 5, "temporary_willpower": 3, "age": 9000}, {"age": 5000}),
    ],
)
def test_traits_are_clamped_to_the_nearest_legal_value(traits, repaired):
    character = Character.objects.create(name="Odd", **traits)
    untouched = Character.objects.create(name="Fine", willpower=5, temporary_willpower=3, age=None)
    long_ago = timezone.now() - timedelta(days=300)
    Character.objects.filter(pk=character.pk).update(updated_at=long_ago)

    run = validate(fix=True, rules=["character_trait_out_of_range"])

    character.refresh_from_db()
    for field, value in repaired.items():
        assert getattr(character, field) == value
    assert character.updated_at > long_ago
    finding = finding_for(run, "character_trait_out_of_range", character.id)
    assert finding.fixed and finding.after == repaired
    assert all(finding.before[field] == traits.get(field) for field in repaired)
    assert not Finding.objects.filter(run=run, object_id=untouched.id).exists()


def test_an_archived_unfinished_scene_is_unarchived():
    scene = Scene.objects.create(name="S", finished=False, archived_at=NOW)

    run = validate(fix=True, rules=["scene_archived_unfinished"])

    scene.refresh_from_db()
    assert scene.archived_at is None
    finding = finding_for(run, "scene_archived_unfinished", scene.id)
    assert finding.before == {"archived_at": NOW.isoformat()} and finding.after == {
        "archived_at": None
    }


def test_stale_activity_is_set_to_the_newest_post():
    scene = Scene.objects.create(name="S", finished=True, last_activity_at=NOW)
    newest = NOW + timedelta(hours=5)
    Post.objects.bulk_create(
        [
            Post(scene=scene, message="a", created_at=NOW - timedelta(days=1)),
            Post(scene=scene, message="b", created_at=newest),
        ]
    )
    never_active = Scene.objects.create(name="T", finished=True)
    Post.objects.bulk_create([Post(scene=never_active, message="c", created_at=NOW)])
    quiet = Scene.objects.create(name="Quiet", finished=True)

    run = validate(fix=True, rules=["scene_activity_stale"])

    scene.refresh_from_db()
    never_active.refresh_from_db()
    assert scene.last_activity_at == newest and never_active.last_activity_at == NOW
    assert found(run) == {"scene_activity_stale": sorted([scene.id, never_active.id])}
    assert quiet.id not in found(run)["scene_activity_stale"]
    finding = finding_for(run, "scene_activity_stale", scene.id)
    assert finding.before == {"last_activity_at": NOW.isoformat()}
    assert finding.after == {"last_activity_at": newest.isoformat()}


def test_report_only_rules_say_why_and_change_nothing():
    scene = Scene.objects.create(name="Nowhere")
    post = Post.objects.create(message="lost", scene=None)

    run = validate(fix=True, rules=["scene_without_chronicle", "post_without_scene"])

    assert run.changed == 0
    assert "report only" in finding_for(run, "scene_without_chronicle", scene.id).message
    assert "report only" in finding_for(run, "post_without_scene", post.id).message


def test_the_chronicle_filter_keeps_to_one_chronicle(planted):
    chronicle = Chronicle.objects.order_by("id").first()

    run = validate(chronicle_id=chronicle.id)

    characters = set(Character.objects.filter(chronicle=chronicle).values_list("id", flat=True))
    scenes = set(Scene.objects.filter(chronicle=chronicle).values_list("id", flat=True))
    posts = set(Post.objects.filter(scene__chronicle=chronicle).values_list("id", flat=True))
    assert run.findings > 0
    for finding in run.finding_set.all():
        expected = {"chronicles.Character": characters, "chronicles.Scene": scenes}.get(
            finding.model, posts
        )
        assert finding.object_id in expected
    assert run.processed == 3 * len(characters) + 3 * len(scenes) + len(posts)


def test_a_batch_costs_the_same_queries_whatever_its_size(planted):
    operation = operations.get("validate_data_integrity")
    params = operation.clean({"fix": True, "rules": ["character_trait_out_of_range"]}).params
    counts = []
    for batch_size in (5, 60):
        Character.objects.update(willpower=0)  # every row broken: the worst case
        with CaptureQueriesContext(connection) as queries:
            result = operation.run_batch(RunContext(None, params, {}, False, batch_size), None)
        assert result.changed == batch_size
        counts.append(len(queries))

    # the batch's ids, the broken rows, the repaired rows locked and read, one UPDATE
    assert counts[0] == counts[1] == 4
