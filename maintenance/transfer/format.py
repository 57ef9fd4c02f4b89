"""The characters file format, version 1 (JSON Lines, UTF-8).

Line 1 is the header: {"format": "tg-maintenance.characters", "version": 1}.
Every other line is one character:

    {"external_id": "<uuid>", "name": "...", "owner": "<username>" | null,
     "chronicle": "<chronicle name>" | null, "status": "Un|Sub|App|Ret|Dec",
     "npc": false, "xp": 12, "willpower": 5, "temporary_willpower": 3,
     "age": 40 | null, "created_at": "<ISO 8601 with zone>",
     "ledger": [{"amount": 5, "kind": "weekly", "created_at": "<ISO>", "note": ""}, ...]}

Keys are written in the order of maintenance.transfer.schema, so the same data always
gives the same bytes. Every key is required and no other is allowed; xp must equal the
sum of the ledger. Validation is pure Python and refuses whatever either database would.
"""

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils.dateparse import parse_datetime

from maintenance.transfer.schema import CHARACTER, FIELDS, LEDGER, LEDGER_FIELDS, FieldSpec

FORMAT = "tg-maintenance.characters"
VERSION = 1
HEADER = {"format": FORMAT, "version": VERSION}
__all__ = ["FIELDS", "LEDGER_FIELDS"]
# Shown in any display time zone (+-24h) without leaving datetime's range.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
# NUL and lone surrogates: PostgreSQL refuses them, UTF-8 cannot encode the latter.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FileError("line 1 is not a JSON header; is this a characters export?") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FileError(f"line 1 must be the header {header_line()}")
    if header.get("version") != VERSION:
        raise FileError(
            f"format version {show(header.get('version'))} is not supported (this reads {VERSION})"
        )


def show(value, longest=60):
    """A value for a message: its repr (which escapes NUL and surrogates), shortened."""
    text = repr(value)
    return text if len(text) <= longest else text[: longest - 3] + "..."


@dataclass
class CharacterLine:
    """One valid line: `values` by file key (the ledger as a list of dicts)."""

    line: int
    values: dict

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self):
        return to_record(self.values)


def to_record(values):
    """One character as the file holds it, keys in file order, from Python values
    keyed by file key (UUIDs, aware datetimes, the ledger as dicts)."""
    record = {spec.name: _to_json(spec, values[spec.name]) for spec in CHARACTER}
    record["ledger"] = [
        {spec.name: _to_json(spec, entry[spec.name]) for spec in LEDGER}
        for entry in values["ledger"]
    ]
    return record


def _to_json(spec, value):
    if value is None or spec.kind == "ledger":
        return value
    if spec.kind == "uuid":
        return str(value)
    if spec.kind == "moment":
        return value.isoformat()
    return value


def load_record(raw):
    """The JSON object of one line's bytes, or LineError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LineError(f"not UTF-8 (byte {error.start})") from None
    try:
        record = json.loads(text)
    except RecursionError:
        raise LineError("not JSON (nested too deeply)") from None
    except ValueError as error:
        raise LineError(f"not JSON ({error})") from None
    if not isinstance(record, dict):
        raise LineError("must be a JSON object")
    return record


def normal_id(value):
    """The canonical spelling of an external_id (anything uuid.UUID accepts), or None."""
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        return None


def parse_line(raw, line):
    """A CharacterLine from one line's bytes, or LineError saying what is wrong."""
    return validate(load_record(raw), line)


def validate(record, line):
    _keys(record, FIELDS, "")
    values = {spec.name: _value(spec, record[spec.name], "") for spec in CHARACTER}
    if values["temporary_willpower"] > values["willpower"]:
        raise LineError(
            f"temporary_willpower {values['temporary_willpower']} is outside "
            f"0..{values['willpower']}"
        )
    total = sum(entry["amount"] for entry in values["ledger"])
    if total != values["xp"]:
        raise LineError(f"xp is {values['xp']} but the ledger sums to {total}")
    return CharacterLine(line=line, values=values)


def _keys(record, expected, where):
    missing = [key for key in expected if key not in record]
    extra = [escaped(key) for key in record if key not in expected]
    if missing:
        raise LineError(f"{where}missing {', '.join(missing)}")
    if extra:
        raise LineError(f"{where}unknown field {', '.join(extra[:5])}")


def escaped(text, longest=40):
    """`text` safe to store in a message: NUL and surrogates escaped, shortened."""
    return UNSTORABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text[:longest])


def _value(spec: FieldSpec, value, where):
    name = f"{where}{spec.name}"
    if value is None and spec.nullable:
        return None
    return _CHECKS[spec.kind](spec, value, name)


def _uuid(spec, value, name):
    if normal_id(value) is None:
        raise LineError(f"{name} must be a UUID, not {show(value)}")
    return uuid.UUID(value)


def _text(spec, value, name):
    if not isinstance(value, str) or not (spec.blank or value.strip()):
        kind = "a string" if spec.blank else "a non-empty string"
        raise LineError(f"{name} must be {kind}, not {show(value)}")
    if len(value) > spec.max_length:
        raise LineError(f"{name} is longer than {spec.max_length} characters")
    found = UNSTORABLE.search(value)
    if found:
        raise LineError(
            f"{name} holds a character the database cannot store "
            f"(U+{ord(found.group()):04X} at position {found.start()})"
        )
    return value


def _choice(spec, value, name):
    if not isinstance(value, str) or value not in spec.choices:
        raise LineError(f"{name} {show(value)} is not one of {', '.join(spec.choices)}")
    return value


def _bool(spec, value, name):
    if not isinstance(value, bool):
        raise LineError(f"{name} must be true or false, not {show(value)}")
    return value


def _int(spec, value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineError(f"{name} must be a whole number, not {show(value)}")
    if not spec.low <= value <= spec.high:
        raise LineError(f"{name} {show(value, 30)} is outside {spec.low}..{spec.high}")
    if spec.nonzero and value == 0:
        raise LineError(f"{name} must not be 0")
    return value


def _moment(spec, value, name):
    """An aware datetime in UTC, within what every database and display zone holds."""
    problem = f"{name} must be an ISO 8601 date-time with a zone, not {show(value)}"
    try:
        moment = parse_datetime(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):  # 30 February, an offset of 25 hours
        raise LineError(problem) from None
    if moment is None or moment.tzinfo is None:
        raise LineError(problem)
    try:
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 east of UTC, 9999-12-31 west of it
        moment = None
    if moment is None or not EARLIEST <= moment <= LATEST:
        raise LineError(f"{name} {show(value)} is outside {EARLIEST.date()}..{LATEST.date()} UTC")
    return moment


def _ledger(spec, value, name):
    if not isinstance(value, list):
        raise LineError("ledger must be a list")
    return [_ledger_entry(entry, n) for n, entry in enumerate(value, start=1)]


def _ledger_entry(entry, number):
    where = f"ledger entry {number}: "
    if not isinstance(entry, dict):
        raise LineError(f"{where}must be an object")
    _keys(entry, LEDGER_FIELDS, where)
    return {spec.name: _value(spec, entry[spec.name], where) for spec in LEDGER}


_CHECKS = {
    "uuid": _uuid,
    "text": _text,
    "choice": _choice,
    "bool": _bool,
    "int": _int,
    "moment": _moment,
    "ledger": _ledger,
}
