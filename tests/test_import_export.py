"""export_characters / import_characters: the format, the round trip, bad lines and
files, idempotence, dry runs, batches and resume."""

import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry
from chronicles.testdata.generator import Options, generate
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun
from maintenance.tasks import OPERATION_TASKS
from maintenance.transfer.format import header_line
from tests.factories import task_summary

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GOOD = {
    "external_id": "6f1c2a3e-4b5d-4e6f-8a9b-0c1d2e3f4a5b",
    "name": "Adelaide Crane",
    "owner": "player1",
    "chronicle": "Chicago by Night",
    "status": "App",
    "npc": False,
    "xp": 4,
    "willpower": 5,
    "temporary_willpower": 3,
    "age": 120,
    "created_at": "2025-01-02T03:04:05.000006+00:00",
    "ledger": [
        {"amount": 6, "kind": "story", "created_at": "2025-02-01T00:00:00+00:00", "note": ""},
        {"amount": -2, "kind": "spend", "created_at": "2025-03-01T00:00:00+00:00", "note": "x"},
    ],
}


def line(**changes):
    record = {**GOOD, **changes}
    for key in [k for k, v in changes.items() if v is ...]:
        del record[key]
    return json.dumps(record)


def write(tmp_path, *lines, header=None, name="characters.jsonl"):
    path = tmp_path / name
    content = "\n".join([header if header is not None else header_line(), *lines]) + "\n"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def import_file(path, *flags):
    out = StringIO()
    call_command("import_characters", path, "--json", *flags, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def export(*flags):
    out = StringIO()
    call_command("export_characters", *flags, stdout=out)
    return out.getvalue()


def wipe_game_data():
    XPEntry.objects.all().delete()
    for model in (Post, Scene, Character, Chronicle, get_user_model()):
        model.objects.all().delete()


def counts():
    models = (get_user_model(), Chronicle, Character, XPEntry)
    return {model.__name__: model.objects.count() for model in models}


@pytest.fixture
def known_owner_and_chronicle():
    get_user_model().objects.create(username="player1")
    Chronicle.objects.create(name="Chicago by Night")


def test_export_writes_a_versioned_header_and_a_character_per_line():
    generate(Options(seed=3, chronicles=2, characters=15, scenes=10, defect_rate=0, now=NOW))

    lines = export().splitlines()

    assert json.loads(lines[0]) == {"format": "tg-maintenance.characters", "version": 1}
    assert len(lines) == 16
    first = json.loads(lines[1])
    assert list(first) == list(GOOD)
    assert sum(entry["amount"] for entry in first["ledger"]) == first["xp"]


def test_export_batches_do_not_change_the_output_and_the_filter_works():
    generate(Options(seed=3, chronicles=3, characters=40, scenes=10, defect_rate=0, now=NOW))
    chronicle = Chronicle.objects.order_by("id").first()

    assert export("--batch-size", "7") == export()
    scoped = [json.loads(x) for x in export("--chronicle-id", str(chronicle.id)).splitlines()[1:]]
    assert scoped and {record["chronicle"] for record in scoped} == {chronicle.name}
    assert len(scoped) == Character.objects.filter(chronicle=chronicle).count()


def test_round_trip_export_import_into_an_empty_database_export_again(tmp_path):
    generate(Options(seed=8, chronicles=3, characters=60, scenes=20, defect_rate=0, now=NOW))
    path = tmp_path / "first.jsonl"
    call_command("export_characters", "--output", str(path), stderr=StringIO())
    wipe_game_data()

    summary = import_file(str(path), "--create-owners", "--create-chronicles", "--batch-size=9")

    assert summary["status"] == "succeeded" and summary["changed"] == 60
    assert summary["bad_lines"] == []
    second = tmp_path / "second.jsonl"
    call_command("export_characters", "--output", str(second), stderr=StringIO())
    assert second.read_bytes() == path.read_bytes()


def test_importing_the_same_file_again_changes_nothing(tmp_path, known_owner_and_chronicle):
    path = write(tmp_path, line())
    import_file(path)
    before = counts()

    again = import_file(path)

    assert counts() == before
    assert (again["processed"], again["changed"], again["findings"]) == (1, 0, 0)


def test_an_existing_id_with_other_data_is_refused_not_overwritten(
    tmp_path, known_owner_and_chronicle
):
    import_file(write(tmp_path, line()))

    summary = import_file(write(tmp_path, line(name="Someone Else"), name="changed.jsonl"))

    assert "already exists with other data" in summary["bad_lines"][0]["reason"]
    assert Character.objects.get().name == "Adelaide Crane"


BAD_LINES = [
    ("{not json", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    (line(name=...), "missing name"),
    (line(colour="red"), "unknown field colour"),
    (line(external_id="abc"), "external_id must be a UUID"),
    (line(status="Zombie"), "status 'Zombie' is not one of"),
    (line(npc="no"), "npc must be true or false"),
    (line(xp="4"), "xp must be a whole number"),
    (line(willpower=11), "willpower 11 is outside 1..10"),
    (line(temporary_willpower=6), "temporary_willpower 6 is outside 0..5"),
    (line(age=-1), "age -1 is outside 0..5000"),
    (line(name=""), "name must be a non-empty string"),
    (line(created_at="yesterday"), "created_at must be an ISO 8601 date-time"),
    (line(created_at="2025-01-02T03:04:05"), "with a zone"),
    (line(xp=5), "xp is 5 but the ledger sums to 4"),
    (line(ledger="lots"), "ledger must be a list"),
    (
        line(
            xp=0, ledger=[{"amount": 0, "kind": "story", "created_at": NOW.isoformat(), "note": ""}]
        ),
        "ledger entry 1: amount must not be 0",
    ),
    (
        line(
            xp=1, ledger=[{"amount": 1, "kind": "gift", "created_at": NOW.isoformat(), "note": ""}]
        ),
        "ledger entry 1: kind 'gift' is not one of",
    ),
    (line(xp=0, ledger=[{"amount": 1}]), "ledger entry 1: missing kind"),
    (line(owner="nobody"), "owner 'nobody' does not exist (--create-owners)"),
    (line(chronicle="Atlantis"), "chronicle 'Atlantis' does not exist (--create-chronicles)"),
]


@pytest.mark.parametrize("bad, reason", BAD_LINES, ids=[r for _, r in BAD_LINES])
def test_each_kind_of_bad_line_is_reported_and_the_good_ones_imported(
    tmp_path, known_owner_and_chronicle, bad, reason
):
    before = line(external_id="0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9")
    after = line(external_id="1c2d3e4f-5061-4728-93a4-b5c6d7e8f901")
    path = write(tmp_path, before, bad, after)

    summary = import_file(path)

    [rejected] = summary["bad_lines"]
    assert rejected["line"] == 3
    assert rejected["reason"].startswith("line 3: ") and reason in rejected["reason"]
    assert summary["changed"] == 2
    assert Character.objects.count() == 2


def test_not_utf8_and_huge_lines_are_rejected_alone(tmp_path, known_owner_and_chronicle):
    path = tmp_path / "mixed.jsonl"
    huge = '{"name": "' + "x" * (1024 * 1024 + 10) + '"}'
    latin1 = json.dumps(
        {**GOOD, "name": "Caf\u00e9", "external_id": "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"},
        ensure_ascii=False,
    )
    content = "\n".join([header_line(), line(), "PLACEHOLDER", huge]) + "\n"
    raw = content.encode().replace(b"PLACEHOLDER", latin1.encode("latin-1"))
    path.write_bytes(raw)

    summary = import_file(str(path))

    reasons = {bad["line"]: bad["reason"] for bad in summary["bad_lines"]}
    assert "not UTF-8" in reasons[3]
    assert "over the limit; skipped" in reasons[4]
    assert summary["changed"] == 1


def test_duplicate_ids_in_one_file_keep_the_first_even_across_batches(
    tmp_path, known_owner_and_chronicle
):
    others = [line(external_id=f"00000000-0000-4000-8000-{n:012d}") for n in range(5)]
    path = write(tmp_path, line(), *others, line(name="Twin"))

    summary = import_file(path, "--batch-size", "2")

    assert summary["bad_lines"] == [
        {"line": 8, "reason": "line 8: duplicate external_id: line 2 has the same one"}
    ]
    assert Character.objects.filter(name="Twin").count() == 0


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"not a header\n", "line 1 is not a JSON header"),
        (b'{"format": "something-else", "version": 1}\n', "line 1 must be the header"),
        (b'{"format": "tg-maintenance.characters", "version": 2}\n', "version 2 is not supported"),
    ],
)
def test_an_unusable_file_is_one_error_and_writes_nothing(tmp_path, content, message):
    path = tmp_path / "file.jsonl"
    if content is not None:
        path.write_bytes(content + line().encode() + b"\n")
        if content == b"":
            path.write_bytes(b"")

    with pytest.raises(CommandError) as raised:
        import_file(str(path), "--create-owners", "--create-chronicles")

    assert raised.value.returncode == 2 and message in str(raised.value)
    assert counts()["Character"] == 0
    assert not MaintenanceRun.objects.exists()


def test_a_file_over_the_size_limit_is_refused(tmp_path, settings, known_owner_and_chronicle):
    settings.MAINTENANCE_IMPORT_MAX_BYTES = 100
    path = write(tmp_path, line())

    with pytest.raises(CommandError, match="over the limit of 100"):
        import_file(path)
    assert not Character.objects.exists()


def test_a_dry_run_writes_nothing_and_says_what_it_would_create(tmp_path):
    path = write(
        tmp_path, line(), line(owner="x", external_id="0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9")
    )

    summary = import_file(path, "--dry-run", "--create-owners", "--create-chronicles")

    assert summary["dry_run"] is True and summary["changed"] == 2
    assert counts() == {"User": 0, "Chronicle": 0, "Character": 0, "XPEntry": 0}


def test_created_owners_cannot_log_in(tmp_path):
    import_file(write(tmp_path, line()), "--create-owners", "--create-chronicles")

    owner = get_user_model().objects.get(username="player1")
    assert not owner.is_active and not owner.has_usable_password()
    assert Character.objects.get().owner == owner


def test_a_failing_batch_leaves_nothing_half_written(
    tmp_path, known_owner_and_chronicle, monkeypatch
):
    lines = [line(external_id=f"00000000-0000-4000-8000-{n:012d}") for n in range(6)]
    path = write(tmp_path, *lines)
    real_bulk_create = XPEntry.objects.bulk_create
    calls = []

    def second_batch_breaks(objs, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real_bulk_create(objs, *args, **kwargs)

    monkeypatch.setattr(XPEntry.objects, "bulk_create", second_batch_breaks)

    run = execute(create_run("import_characters", {"path": path, "batch_size": 3}, trigger="cli"))

    assert run.status == "failed" and "disk full" in run.error
    assert Character.objects.count() == 3  # the first batch only, each with its ledger
    for character in Character.objects.all():
        assert sum(character.xp_entries.values_list("amount", flat=True)) == character.xp

    monkeypatch.undo()
    resumed = execute(
        create_run("import_characters", {"path": path, "batch_size": 3}, trigger="cli")
    )
    assert resumed.resumed_from_id == run.pk
    assert Character.objects.count() == 6


def test_the_import_task_takes_a_file_path(tmp_path, known_owner_and_chronicle):
    path = write(tmp_path, line())

    result = task_summary(OPERATION_TASKS["import_characters"].apply(kwargs={"path": path}))

    assert result["status"] == "succeeded" and result["changed"] == 1
    run = MaintenanceRun.objects.get(pk=result["run_id"])
    assert run.operation == "import_characters" and run.params["path"] == path


def test_the_import_task_with_a_bad_path_is_a_failed_run():
    result = task_summary(
        OPERATION_TASKS["import_characters"].apply(kwargs={"path": "/nope.jsonl"})
    )

    assert result["status"] == "failed"
    assert "invalid parameters: /nope.jsonl: no such file" in result["error"]


def test_human_report_lists_every_bad_line(tmp_path, known_owner_and_chronicle):
    path = write(tmp_path, line(), "{oops", "[]")
    out = StringIO()

    call_command("import_characters", path, stdout=out)

    text = out.getvalue()
    assert "created 1 characters" in text and "2 lines rejected" in text
    assert "line 3: not JSON" in text and "line 4: must be a JSON object" in text
