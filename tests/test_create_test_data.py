"""create_test_data: realistic, deterministic, clean at rate 0, and planting exactly the
problems it reports."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry
from chronicles.testdata.generator import RULES, Options, generate
from tests.oracle import ledger_sums, violations

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SMALL = dict(chronicles=4, characters=120, scenes=400, now=NOW)


def snapshot():
    """Every generated row, as plain values, in id order (the ledger's ids are the
    database's own, so ledger rows are compared by content)."""
    ledger_fields = ["character_id", "created_at", "amount", "kind", "scene_id", "note"]
    return {
        model.__name__: list(model.objects.order_by("pk").values_list())
        for model in (get_user_model(), Chronicle, Character, Scene, Post)
    } | {
        "ledger": list(XPEntry.objects.order_by(*ledger_fields).values_list(*ledger_fields)),
        "participants": list(
            Scene.participants.through.objects.order_by("scene_id", "character_id").values_list(
                "scene_id", "character_id"
            )
        ),
    }


def wipe():
    XPEntry.objects.all().delete()
    for model in (Post, Scene, Character, Chronicle, get_user_model()):
        model.objects.all().delete()


def test_clean_data_breaks_no_integrity_rule():
    generate(Options(seed=5, defect_rate=0, **SMALL))

    assert violations() == {}
    assert Scene.objects.count() == 400
    assert Character.objects.count() == 120


def test_planted_problems_are_exactly_what_the_rules_find():
    result = generate(Options(seed=6, defect_rate=0.05, **SMALL))

    assert violations() == {rule: ids for rule, ids in result.planted.items()}
    for rule in RULES:
        assert result.planted[rule], f"nothing planted for {rule}"


def test_a_tiny_rate_still_plants_one_problem_per_rule():
    result = generate(Options(seed=6, defect_rate=0.0001, **SMALL))

    assert {rule: len(ids) for rule, ids in result.planted.items()} == dict.fromkeys(RULES, 1)


def test_the_problems_a_fix_cannot_repair_are_reported_as_such():
    result = generate(Options(seed=7, defect_rate=0.1, **SMALL))
    sums = ledger_sums()

    no_owner = result.planted["character_without_owner"]
    stranded = set(result.unfixable["character_without_owner"])
    assert stranded and stranded < set(no_owner)
    for character in Character.objects.filter(id__in=no_owner).select_related("chronicle"):
        has_storyteller = bool(character.chronicle and character.chronicle.storytellers.exists())
        assert has_storyteller == (character.id not in stranded)

    overspent = set(result.unfixable["character_xp_mismatch"])
    assert overspent
    for character_id in result.planted["character_xp_mismatch"]:
        assert (sums.get(character_id, 0) < 0) == (character_id in overspent)


def test_the_same_seed_and_moment_give_the_same_data():
    generate(Options(seed=11, **SMALL))
    first = snapshot()
    wipe()

    generate(Options(seed=11, **SMALL))

    assert snapshot() == first


def test_another_seed_gives_other_data():
    generate(Options(seed=11, **SMALL))
    first = snapshot()
    wipe()

    generate(Options(seed=12, **SMALL))

    assert snapshot()["Scene"] != first["Scene"]


def test_the_shape_is_realistic():
    generate(Options(seed=3, defect_rate=0, **SMALL))

    two_years_ago = NOW - timedelta(days=731)
    assert not Scene.objects.filter(created_at__lt=two_years_ago).exists()
    assert not Scene.objects.filter(created_at__gt=NOW).exists()
    assert Scene.objects.filter(created_at__lt=NOW - timedelta(days=365)).exists()
    # Some old finished scenes are already archived and some are waiting for it.
    old = Scene.objects.filter(finished=True, created_at__lt=NOW - timedelta(days=200))
    assert old.filter(archived_at__isnull=False).exists()
    assert old.filter(archived_at__isnull=True).exists()
    assert Scene.objects.filter(finished=False).exists()
    # Every chronicle has a storyteller; characters span the statuses and have ledgers.
    assert not Chronicle.objects.annotate(n=Count("storytellers")).filter(n=0).exists()
    assert set(Character.objects.values_list("status", flat=True)) == {
        "Un",
        "Sub",
        "App",
        "Ret",
        "Dec",
    }
    assert Character.objects.filter(npc=True).exists()
    assert XPEntry.objects.filter(amount__lt=0, kind="spend").exists()
    assert Scene.objects.annotate(n=Count("participants")).filter(n__gte=2).exists()
    posts_per_scene = Post.objects.count() / Scene.objects.count()
    assert 2 < posts_per_scene < 4


def test_running_twice_appends_new_rows_and_ids_keep_working():
    generate(Options(seed=1, defect_rate=0, **SMALL))
    generate(Options(seed=2, defect_rate=0, **SMALL))

    assert Scene.objects.count() == 800
    assert violations() == {}
    # The id sequences moved past the generated ids (PostgreSQL).
    new_scene = Scene.objects.create(name="after")
    assert new_scene.id > 800


def test_the_command_prints_a_summary_with_the_planted_problems():
    out = StringIO()

    call_command(
        "create_test_data",
        "--seed=4",
        "--chronicles=3",
        "--characters=60",
        "--scenes=200",
        "--defect-rate=0.05",
        "--now=2026-06-01T12:00:00+00:00",
        stdout=out,
    )

    text = out.getvalue()
    assert "Created" in text and "rows/s" in text
    assert "scenes" in text and "200" in text
    for rule in RULES:
        assert rule in text
    assert Scene.objects.count() == 200


def test_the_command_says_when_data_is_clean():
    out = StringIO()
    call_command("create_test_data", "--scenes=10", "--characters=5", "--defect-rate=0", stdout=out)
    assert "No integrity problems planted" in out.getvalue()


@pytest.mark.parametrize(
    "argument, message",
    [
        ("--defect-rate=1.5", "--defect-rate must be between 0 and 1"),
        ("--scenes=-1", "--scenes must be 0 or more"),
        ("--posts-per-scene=-2", "--posts-per-scene must be between 0 and 1000"),
    ],
)
def test_bad_options_give_one_clear_error_and_write_nothing(argument, message):
    with pytest.raises(CommandError, match=message) as raised:
        call_command("create_test_data", argument, stdout=StringIO())
    assert raised.value.returncode == 2
    assert not Scene.objects.exists() and not Character.objects.exists()


def test_a_moment_without_a_time_zone_is_refused():
    with pytest.raises(CommandError, match="time zone"):
        call_command("create_test_data", "--now=2026-06-01T12:00:00", stdout=StringIO())
    assert not Scene.objects.exists()
