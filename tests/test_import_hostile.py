"""import_characters under hostile input, generated with hypothesis.

(a) Each hostile line (impossible dates, offsets beyond 24 hours, moments that overflow
UTC, integers beyond their column, NUL and lone surrogates in any string, JSON nested
thousands deep, an external_id spelt another way) is a finding with its line number, the
good lines import, and export, re-import and the admin still work. (b) A failed import
resumes only onto the same file. (c) Memory stays flat for files up to the size limit.
"""

import contextlib
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun
from maintenance.operations.import_characters import ImportCharacters, _Batch
from maintenance.transfer import index
from maintenance.transfer.format import header_line
from maintenance.transfer.reader import read_lines

pytestmark = pytest.mark.django_db
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # CI runs the same examples every time; a developer's run explores new ones.
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
INT_MAX = 2**31 - 1
OWNERS = ["player1", "player2", "Spieler \u00e9\U0001f600"]
CHRONICLES = ["Chicago by Night", "Berlin", None]


# --- good lines ------------------------------------------------------------------------

moment = st.one_of(
    st.sampled_from(
        [
            "2025-01-02T03:04:05.000006+00:00",
            "0001-01-02T00:00:00+00:00",  # the earliest allowed
            "9999-12-30T23:59:59.999999+00:00",  # the latest allowed
            "2024-02-29T12:00:00+02:00",
            "2025-06-01T00:00:00-11:30",
        ]
    ),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.isoformat() + "+00:00"
    ),
)
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=200,
).filter(str.strip)
amount = st.integers(-1000, INT_MAX).filter(bool)


@st.composite
def good_record(draw):
    ledger = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "amount": amount,
                    "kind": st.sampled_from(["weekly", "scene", "story", "manual", "spend"]),
                    "created_at": moment,
                    "note": st.one_of(st.just(""), text),
                }
            ),
            max_size=3,
        )
    )
    total = sum(entry["amount"] for entry in ledger)
    if not 0 <= total <= INT_MAX:  # keep the good line good: one entry brings it back
        ledger = ledger[:1] if ledger and ledger[0]["amount"] > 0 else []
        total = sum(entry["amount"] for entry in ledger)
    willpower = draw(st.integers(1, 10))
    return {
        "external_id": str(draw(st.uuids())),
        "name": draw(text),
        "owner": draw(st.sampled_from([*OWNERS, None])),
        "chronicle": draw(st.sampled_from(CHRONICLES)),
        "status": draw(st.sampled_from(["Un", "Sub", "App", "Ret", "Dec"])),
        "npc": draw(st.booleans()),
        "xp": total,
        "willpower": willpower,
        "temporary_willpower": draw(st.integers(0, willpower)),
        "age": draw(st.one_of(st.none(), st.integers(0, 5000))),
        "created_at": draw(moment),
        "ledger": ledger,
    }


# --- hostile values, one strategy per class ----------------------------------------------

DAYS = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
impossible_date = st.builds(
    lambda year, month, extra, zone: (
        f"{year:04d}-{month:02d}-{DAYS.get(month, 31) + extra:02d}T00:00:00{zone}"
    ),
    st.integers(1, 9999),
    st.integers(1, 12),
    st.integers(1, 99 - 31),
    st.sampled_from(["+00:00", "Z", "-05:00"]),
)
offset_beyond_a_day = st.builds(
    lambda sign, hours, minutes: f"2025-01-02T03:04:05{sign}{hours:02d}:{minutes:02d}",
    st.sampled_from("+-"),
    st.integers(24, 99),
    st.integers(0, 59),
)
overflowing_moment = st.one_of(
    st.builds(
        lambda h, m: f"0001-01-01T00:00:00+{h:02d}:{m:02d}",
        st.integers(0, 23),
        st.integers(0, 59),
    ),
    st.builds(
        lambda h, m: f"9999-12-31T23:59:59-{h:02d}:{m:02d}",
        st.integers(0, 23),
        st.integers(1, 59),
    ),
    st.builds(
        lambda h: f"9999-12-31T{h:02d}:00:00+00:00",  # shown west of UTC it overflows
        st.integers(0, 23),
    ),
)
huge_int = st.one_of(
    st.integers(2**31, 2**80),
    st.integers(-(2**80), -(2**31) - 1),
    st.sampled_from([2**31, 2**63, 2**70, -(2**31) - 1, 2**64]),
)
INT_FIELDS = ["xp", "willpower", "temporary_willpower", "age", "ledger.amount"]
STRING_FIELDS = ["name", "owner", "chronicle", "status", "external_id", "ledger.note"]
MOMENT_FIELDS = ["created_at", "ledger.created_at"]
unstorable_char = st.one_of(st.just("\x00"), st.integers(0xD800, 0xDFFF).map(chr))


def set_field(record, field, value):
    """`record` with `field` (a key, or "ledger.<key>" for a ledger entry) set."""
    record = json.loads(json.dumps(record))
    if field.startswith("ledger."):
        if not record["ledger"]:
            record["ledger"] = [
                {"amount": 1, "kind": "story", "created_at": record["created_at"], "note": ""}
            ]
            record["xp"] = 1
        record["ledger"][0][field.split(".", 1)[1]] = value
    else:
        record[field] = value
    return record


def get_field(record, field):
    if field.startswith("ledger."):
        return record["ledger"][0][field.split(".", 1)[1]] if record["ledger"] else "note"
    return record[field]


@st.composite
def hostile_line(draw, record):
    """(the line's text, the class it belongs to) for a good record made bad."""
    kind = draw(
        st.sampled_from(["date", "offset", "overflow", "int", "sum", "char", "key", "deep"])
    )
    if kind in ("date", "offset", "overflow"):
        values = {"date": impossible_date, "offset": offset_beyond_a_day}
        value = draw(values.get(kind, overflowing_moment))
        return json.dumps(set_field(record, draw(st.sampled_from(MOMENT_FIELDS)), value)), kind
    if kind == "int":
        field = draw(st.sampled_from(INT_FIELDS))
        changed = set_field(record, field, draw(huge_int))
        if field == "ledger.amount":  # only the range can be wrong, not the sum
            changed["xp"] = changed["ledger"][0]["amount"] + sum(
                e["amount"] for e in changed["ledger"][1:]
            )
        return json.dumps(changed), kind
    if kind == "sum":  # each amount fits the column, their sum does not
        n = draw(st.integers(2, 4))
        entry = {"amount": INT_MAX, "kind": "story", "created_at": record["created_at"]}
        ledger = [{**entry, "note": ""} for _ in range(n)]
        return json.dumps({**record, "ledger": ledger, "xp": INT_MAX * n}), kind
    if kind == "char":
        field = draw(st.sampled_from(STRING_FIELDS))
        value = get_field(record, field) or "x"
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(unstorable_char) + value[at:]
        return json.dumps(set_field(record, field, value)), kind
    if kind == "key":  # an unstorable character in a key
        key = "x" + draw(unstorable_char)
        return json.dumps({**record, key: 1}), kind
    depth = draw(st.integers(1000, 100000))
    nested = "[" * depth + "]" * depth
    field = draw(st.sampled_from(["name", "xp", "ledger", "age", "extra"]))
    body = json.dumps({k: v for k, v in record.items() if k != field})
    return body[:-1] + f', "{field}": {nested}' + "}", kind


def respell(external_id, how):
    value = uuid.UUID(external_id)
    return {
        "upper": str(value).upper(),
        "braces": "{" + str(value) + "}",
        "urn": value.urn,
        "hex": value.hex,
        "hex-upper": value.hex.upper(),
        "urn-braces": "urn:uuid:" + str(value).upper(),
    }[how]


@st.composite
def hostile_file(draw):
    """[(line text, None for good | the class of the bad line | ("duplicate", first line))]"""
    entries = []
    goods = []  # (line number, record)
    for _ in range(draw(st.integers(1, 10))):
        number = len(entries) + 2
        record = draw(good_record())
        # ids unique by line, so only the generated duplicates repeat one
        record["external_id"] = str(uuid.UUID(int=number << 64 | draw(st.integers(0, 2**64 - 1))))
        if draw(st.booleans()):
            entries.append((json.dumps(record), None))
            goods.append((number, record))
        elif goods and draw(st.integers(0, 3)) == 0:
            first, original = draw(st.sampled_from(goods))
            how = draw(
                st.sampled_from(["upper", "braces", "urn", "hex", "hex-upper", "urn-braces"])
            )
            twin = {**original, "external_id": respell(original["external_id"], how)}
            entries.append((json.dumps(twin), ("duplicate", first)))
        else:
            entries.append(draw(hostile_line(record)))
    return entries


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def no_index_left_behind():
    """The runs these tests leave failed keep their duplicate index for a resume; remove
    the ones made here."""
    started = time.time()
    yield
    for made in glob.glob(os.path.join(tempfile.gettempdir(), f"{index.PREFIX}*.sqlite3")):
        with contextlib.suppress(OSError):
            if os.path.getmtime(made) >= started:
                os.remove(made)


def wipe_game_data():
    XPEntry.objects.all().delete()
    for model in (Post, Scene, Character, Chronicle, get_user_model()):
        model.objects.all().delete()
    MaintenanceRun.objects.all().delete()


def run_import(path, **params):
    params = {"create_owners": True, "create_chronicles": True, **params}
    return execute(create_run("import_characters", {"path": str(path), **params}, trigger="cli"))


def export_text():
    out = StringIO()
    call_command("export_characters", stdout=out)
    return out.getvalue()


def findings(run):
    return dict(run.finding_set.values_list("object_id", "message"))


def admin_answers(ids):
    # no password: hashing one costs more than the rest of an example
    admin = get_user_model().objects.create_superuser("h-import-admin", "a@example.com", None)
    client = Client()
    client.force_login(admin)
    assert client.get(reverse("admin:chronicles_character_changelist")).status_code == 200
    for pk in ids:
        url = reverse("admin:chronicles_character_change", args=[pk])
        assert client.get(url).status_code == 200, url
    admin.delete()


# --- (a) per-line hostility -------------------------------------------------------------


@settings(HYPOTHESIS, max_examples=30)
@given(entries=hostile_file(), batch_size=st.integers(1, 7))
def test_every_hostile_line_is_a_finding_and_the_good_ones_import(
    tmp_path_factory, entries, batch_size
):
    wipe_game_data()
    folder = tmp_path_factory.mktemp("hostile")
    path = folder / "characters.jsonl"
    path.write_text("\n".join([header_line(), *(text for text, _ in entries)]) + "\n")

    run = run_import(path, batch_size=batch_size)

    assert run.status == "succeeded", run.error
    found = findings(run)
    bad = {n: kind for n, (_, kind) in enumerate(entries, start=2) if kind is not None}
    assert set(found) == set(bad), (found, bad)
    for number, kind in bad.items():
        assert found[number].startswith(f"line {number}: ")
        if isinstance(kind, tuple):
            assert f"duplicate external_id: line {kind[1]} has the same one" in found[number]
    good_ids = {json.loads(text)["external_id"] for text, kind in entries if kind is None}
    assert set(map(str, Character.objects.values_list("external_id", flat=True))) == good_ids
    # no finding message holds what the database could not store
    assert all(
        "\x00" not in m and not any(0xD800 <= ord(c) <= 0xDFFF for c in m) for m in found.values()
    )

    first = export_text()
    admin_answers(Character.objects.values_list("pk", flat=True))
    exported = folder / "exported.jsonl"
    exported.write_text(first)
    wipe_game_data()
    again = run_import(exported, batch_size=batch_size)
    assert again.status == "succeeded" and not findings(again)
    assert export_text() == first


# --- (b) identity: resume only onto the same file ---------------------------------------


class Stop(Exception):
    """Raised after the first committed batch: the run fails mid-file, for real."""


def fail_after_first_batch(path, batch_size, redeliver=False):
    """A run stopped after its first committed batch: failed (the next trigger resumes
    it), or, with `redeliver`, left running with an expired lease as a killed worker
    leaves it (the broker delivers the same run again)."""
    stop_with = KeyboardInterrupt if redeliver else Stop

    def stop(report):
        raise stop_with("the caller died")

    run = create_run("import_characters", _params(path, batch_size), trigger="cli")
    try:
        execute(run, on_batch=stop)
    except KeyboardInterrupt:
        lease = django_settings.MAINTENANCE_LEASE_SECONDS + 1
        MaintenanceRun.objects.filter(pk=run.pk).update(
            status="running",
            lease_token="dead-worker",
            heartbeat_at=timezone.now() - timedelta(seconds=lease),
        )
    run.refresh_from_db()
    assert run.status == ("running" if redeliver else "failed")
    assert run.checkpoint["position"] is not None
    return run


def again(run, path, batch_size, redeliver):
    """The next attempt: the same run redelivered, or a new trigger."""
    if redeliver:
        return execute(run)
    return execute(create_run("import_characters", _params(path, batch_size), trigger="cli"))


def _params(path, batch_size):
    return {
        "path": str(path),
        "create_owners": True,
        "create_chronicles": True,
        "batch_size": batch_size,
    }


def write_lines(path, records):
    path.write_text("\n".join([header_line(), *map(json.dumps, records)]) + "\n")


@settings(HYPOTHESIS, max_examples=40)
@given(
    first=st.lists(good_record(), min_size=3, max_size=6, unique_by=lambda r: r["external_id"]),
    second=st.lists(good_record(), min_size=1, max_size=6, unique_by=lambda r: r["external_id"]),
    same_size=st.booleans(),
    same_mtime=st.booleans(),
    batch_size=st.integers(1, 2),
    redeliver=st.booleans(),
)
def test_a_failed_import_resumes_only_onto_the_same_file(
    tmp_path_factory, first, second, same_size, same_mtime, batch_size, redeliver
):
    wipe_game_data()
    path = tmp_path_factory.mktemp("identity") / "characters.jsonl"
    write_lines(path, first)
    stopped = fail_after_first_batch(path, batch_size, redeliver)
    stat = os.stat(path)
    if same_size:  # same bytes count, other content: the first file with one name changed
        second = [{**first[0], "external_id": str(uuid.uuid4())}, *first[1:]]
    write_lines(path, second)
    if same_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not same_size or os.path.getsize(path) == stat.st_size

    counted = stopped.processed  # execute() refreshes the same object
    fresh = again(stopped, path, batch_size, redeliver)

    assert fresh.status == "succeeded" and fresh.resumed_from_id is None
    # from line 2, not from the old checkpoint (a redelivered run keeps its own count)
    assert fresh.processed == len(second) + (counted if redeliver else 0)
    imported = set(map(str, Character.objects.values_list("external_id", flat=True)))
    assert {r["external_id"] for r in second} <= imported
    assert len(json.dumps(fresh.checkpoint)) < 1000


@settings(HYPOTHESIS, max_examples=20)
@given(
    records=st.lists(good_record(), min_size=3, max_size=6, unique_by=lambda r: r["external_id"]),
    batch_size=st.integers(1, 2),
    redeliver=st.booleans(),
)
def test_the_same_unchanged_file_resumes(tmp_path_factory, records, batch_size, redeliver):
    wipe_game_data()
    path = tmp_path_factory.mktemp("identity") / "characters.jsonl"
    write_lines(path, records)
    stopped = fail_after_first_batch(path, batch_size, redeliver)
    counted = stopped.processed  # execute() refreshes the same object

    resumed = again(stopped, path, batch_size, redeliver)

    assert resumed.status == "succeeded"
    if redeliver:
        assert resumed.pk == stopped.pk and resumed.processed == len(records)
    else:
        assert resumed.resumed_from_id == stopped.pk
        assert resumed.processed == len(records) - counted
    assert Character.objects.count() == len(records)


# --- (c) memory --------------------------------------------------------------------------

BASE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 8 * 1024 * 1024  # MAINTENANCE_IMPORT_MAX_BYTES for this test
MEMORY_SCRIPT = r"""
import json, resource, sys
import django
django.setup()
from django.core.management import call_command
from django.db import transaction
from maintenance.operations.import_characters import ImportCharacters
from maintenance.transfer import index
from maintenance.transfer.reader import check_file, file_identity
what, path = sys.argv[1:]
if what == "prepass":
    start = check_file(path)
    index.ensure(path, start, file_identity(path))
    checkpoint = ImportCharacters().prepare({"path": path}, None)
else:
    call_command("migrate", verbosity=0)
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run
    run = execute(create_run("import_characters",
                             {"path": path, "dry_run": True, "batch_size": 10000},
                             trigger="cli"))
    assert run.status == "succeeded", run.error
    checkpoint = run.checkpoint
# ru_maxrss keeps the parent's peak across fork and exec (Linux), so prefer this
# process's own high-water mark when /proc has it.
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
except OSError:
    pass
print(json.dumps({"maxrss_kb": peak,
                  "checkpoint": len(json.dumps(checkpoint))}))
"""


def one_long_line(path):
    """One line just under the limit, costly to parse: a JSON list of empty objects."""
    prefix = header_line() + f'\n{{"external_id": "{uuid.uuid4()}", "name": ['
    room = LIMIT - len(prefix) - 4
    path.write_text(prefix + "{}," * (room // 3 - 1) + "{}]}\n")  # millions of objects


def many_tiny_lines(path, line=lambda: f'{{"external_id": "{uuid.uuid4()}"}}'):
    """Lines of a bare external_id (each a bad line), all distinct, up to the limit."""
    with open(path, "w") as handle:
        handle.write(header_line() + "\n")
        size = len(header_line()) + 1
        while size < LIMIT - 300:
            text = line() + "\n"
            handle.write(text)
            size += len(text)


def many_small_good_lines(path):
    """The smallest good characters, all distinct, up to the limit."""
    smallest = {
        "name": "a",
        "owner": None,
        "chronicle": None,
        "status": "Un",
        "npc": False,
        "xp": 0,
        "willpower": 1,
        "temporary_willpower": 0,
        "age": None,
        "created_at": "2025-01-01T00:00:00+00:00",
        "ledger": [],
    }
    many_tiny_lines(path, lambda: json.dumps({"external_id": str(uuid.uuid4()), **smallest}))


# A whole dry run of the bad tiny lines writes a finding per line (300,000 rows: minutes),
# so that file gets the pre-pass only; the others get the pre-pass and a whole dry run.
@pytest.mark.parametrize(
    "make, steps",
    [
        (one_long_line, ("prepass", "import")),
        (many_small_good_lines, ("prepass", "import")),
        (many_tiny_lines, ("prepass",)),
    ],
)
def test_memory_stays_flat_up_to_the_size_limit(tmp_path, make, steps):
    path = tmp_path / "big.jsonl"
    make(path)
    assert LIMIT - 1024 <= os.path.getsize(path) <= LIMIT
    env = {
        **os.environ,
        "MAINTENANCE_IMPORT_MAX_BYTES": str(LIMIT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'memory.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "worker.settings"),
    }
    for what in steps:
        done = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, what, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=BASE,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        assert measured["maxrss_kb"] < 150 * 1024, (what, measured)
        assert measured["checkpoint"] < 1000, (what, measured)


# --- defence in depth: a batch the database still refuses --------------------------------


@settings(HYPOTHESIS, max_examples=15)
@given(
    records=st.lists(good_record(), min_size=2, max_size=6, unique_by=lambda r: r["external_id"]),
    taken=st.data(),
)
def test_a_batch_the_database_refuses_is_written_line_by_line(tmp_path_factory, records, taken):
    """Another writer creates some of the file's characters between this batch's checks
    and its write (a real unique violation): those lines become findings, the rest import."""
    wipe_game_data()
    path = tmp_path_factory.mktemp("race") / "characters.jsonl"
    write_lines(path, records)
    racing = taken.draw(st.sets(st.sampled_from(range(len(records))), min_size=1))
    operation = ImportCharacters()
    params = {"path": str(path), "create_owners": True, "create_chronicles": True}
    context = operation.prepare(params, None)

    with transaction.atomic():
        batch = _Batch(params, index.ensure(str(path), context["start"], context["file"]))
        lines = read_lines(str(path), context["start"], 2, len(records)).lines
        batch.read(lines)
        batch.resolve()
        for n in racing:  # the other writer wins the race for these ids
            Character.objects.create(name="racer", external_id=records[n]["external_id"])
        created = batch.write()

    refused = {finding.object_id for finding in batch.findings}
    assert refused == {n + 2 for n in racing}
    assert all("the database refused it" in f.message for f in batch.findings)
    assert len(created) == len(records) - len(racing)
    assert Character.objects.count() == len(records)
