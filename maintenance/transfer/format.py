"""The characters file format, version 1 (JSON Lines, UTF-8).

Line 1 is the header: {"format": "tg-maintenance.characters", "version": 1}.
Every other line is one character:

    {"external_id": "<uuid>", "name": "...", "owner": "<username>" | null,
     "chronicle": "<chronicle name>" | null, "status": "Un|Sub|App|Ret|Dec",
     "npc": false, "xp": 12, "willpower": 5, "temporary_willpower": 3,
     "age": 40 | null, "created_at": "<ISO 8601 with zone>",
     "ledger": [{"amount": 5, "kind": "weekly", "created_at": "<ISO>", "note": ""}, ...]}

Keys are written in this order, so the same data always gives the same bytes. Every
key is required and no other is allowed; xp must equal the sum of the ledger.
"""

import json
import uuid
from dataclasses import dataclass

from django.utils.dateparse import parse_datetime

from chronicles.models import AGE_RANGE, WILLPOWER_RANGE, Character, XPEntry

FORMAT = "tg-maintenance.characters"
VERSION = 1
HEADER = {"format": FORMAT, "version": VERSION}
FIELDS = (
    "external_id",
    "name",
    "owner",
    "chronicle",
    "status",
    "npc",
    "xp",
    "willpower",
    "temporary_willpower",
    "age",
    "created_at",
    "ledger",
)
LEDGER_FIELDS = ("amount", "kind", "created_at", "note")
STATUSES = tuple(Character.Status.values)
KINDS = tuple(XPEntry.Kind.values)


class LineError(ValueError):
    """Why one line cannot be imported."""


class FileError(ValueError):
    """Why a whole file cannot be imported (nothing is written)."""


def dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def header_line():
    return dumps(HEADER)


def check_header(raw):
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise FileError("line 1 is not a JSON header; is this a characters export?") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FileError(f"line 1 must be the header {header_line()}")
    if header.get("version") != VERSION:
        raise FileError(
            f"format version {header.get('version')!r} is not supported (this reads {VERSION})"
        )


@dataclass
class CharacterLine:
    line: int
    external_id: uuid.UUID
    name: str
    owner: str | None
    chronicle: str | None
    status: str
    npc: bool
    xp: int
    willpower: int
    temporary_willpower: int
    age: int | None
    created_at: object
    ledger: list  # of (amount, kind, created_at, note)

    def as_dict(self):
        return character_dict(
            self.external_id,
            self.name,
            self.owner,
            self.chronicle,
            self.status,
            self.npc,
            self.xp,
            self.willpower,
            self.temporary_willpower,
            self.age,
            self.created_at,
            self.ledger,
        )


def character_dict(
    external_id,
    name,
    owner,
    chronicle,
    status,
    npc,
    xp,
    willpower,
    temporary_willpower,
    age,
    created_at,
    ledger,
):
    """One character as the file holds it, keys in file order."""
    return {
        "external_id": str(external_id),
        "name": name,
        "owner": owner,
        "chronicle": chronicle,
        "status": status,
        "npc": npc,
        "xp": xp,
        "willpower": willpower,
        "temporary_willpower": temporary_willpower,
        "age": age,
        "created_at": created_at.isoformat(),
        "ledger": [
            {"amount": a, "kind": k, "created_at": c.isoformat(), "note": n}
            for a, k, c, n in ledger
        ],
    }


def _int(value, name, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineError(f"{name} must be a whole number, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise LineError(f"{name} {value} is outside {low}..{high}")
    return value


def _text(value, name, longest, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise LineError(f"{name} must be a non-empty string, not {value!r}")
    if len(value) > longest:
        raise LineError(f"{name} is longer than {longest} characters")
    return value


def _moment(value, name):
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None or moment.tzinfo is None:
        raise LineError(f"{name} must be an ISO 8601 date-time with a zone, not {value!r}")
    return moment


def _keys(record, expected, where):
    missing = [key for key in expected if key not in record]
    extra = [key for key in record if key not in expected]
    if missing:
        raise LineError(f"{where}missing {', '.join(missing)}")
    if extra:
        raise LineError(f"{where}unknown field {', '.join(extra)}")


def _ledger_entry(entry, number):
    where = f"ledger entry {number}: "
    if not isinstance(entry, dict):
        raise LineError(f"{where}must be an object")
    _keys(entry, LEDGER_FIELDS, where)
    amount = _int(entry["amount"], f"{where}amount")
    if amount == 0:
        raise LineError(f"{where}amount must not be 0")
    if entry["kind"] not in KINDS:
        raise LineError(f"{where}kind {entry['kind']!r} is not one of {', '.join(KINDS)}")
    note = entry["note"]
    if not isinstance(note, str) or len(note) > 200:
        raise LineError(f"{where}note must be a string of at most 200 characters")
    return amount, entry["kind"], _moment(entry["created_at"], f"{where}created_at"), note


def parse_line(raw, line):
    """A CharacterLine from one line's bytes, or LineError saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LineError(f"not UTF-8 (byte {error.start})") from None
    try:
        record = json.loads(text)
    except ValueError as error:
        raise LineError(f"not JSON ({error})") from None
    if not isinstance(record, dict):
        raise LineError("must be a JSON object")
    _keys(record, FIELDS, "")
    try:
        external_id = uuid.UUID(record["external_id"])
    except (TypeError, ValueError, AttributeError):
        raise LineError(f"external_id must be a UUID, not {record['external_id']!r}") from None
    if record["status"] not in STATUSES:
        raise LineError(f"status {record['status']!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(record["npc"], bool):
        raise LineError(f"npc must be true or false, not {record['npc']!r}")
    xp = _int(record["xp"], "xp", 0)
    willpower = _int(record["willpower"], "willpower", *WILLPOWER_RANGE)
    temporary = _int(record["temporary_willpower"], "temporary_willpower", 0, willpower)
    age = None if record["age"] is None else _int(record["age"], "age", *AGE_RANGE)
    if not isinstance(record["ledger"], list):
        raise LineError("ledger must be a list")
    ledger = [_ledger_entry(entry, n) for n, entry in enumerate(record["ledger"], start=1)]
    total = sum(amount for amount, *_ in ledger)
    if total != xp:
        raise LineError(f"xp is {xp} but the ledger sums to {total}")
    return CharacterLine(
        line=line,
        external_id=external_id,
        name=_text(record["name"], "name", 200),
        owner=_text(record["owner"], "owner", 150, optional=True),
        chronicle=_text(record["chronicle"], "chronicle", 200, optional=True),
        status=record["status"],
        npc=record["npc"],
        xp=xp,
        willpower=willpower,
        temporary_willpower=temporary,
        age=age,
        created_at=_moment(record["created_at"], "created_at"),
        ledger=ledger,
    )
