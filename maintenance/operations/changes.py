"""Changes to game rows as runs record them, and writing them back.

A fix records, per row, the values it found (`before`) and wrote (`after`); an archiving
batch records the values it gave all its rows. Reverting one writes `before` back where
the row still holds `after`; applying a reviewed plan writes `after` where the row still
holds `before`. Either way the rows are locked, compared and written in one batch
transaction, and a row that holds anything else is left as it is and reported."""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps
from django.db.models import Model

from maintenance.operations.bulk import set_values

# Runs only ever change the game data; a recorded label naming anything else is refused.
GAME_APP = "chronicles"


@dataclass(frozen=True)
class Change:
    """One row's change: it should hold `expect` (JSON values by field) and gets
    `write`. `source` says where it was recorded (a finding's rule, a batch)."""

    model: str
    object_id: int
    expect: dict
    write: dict
    source: str


@dataclass(frozen=True)
class Written:
    """A change that was made: what the row held and what it holds now."""

    change: Change
    held: dict


@dataclass(frozen=True)
class Conflict:
    """A change that was not made: what the row holds now (None: it is gone)."""

    change: Change
    holds: dict | None


def game_model(label: str) -> type[Model]:
    model = apps.get_model(label)
    if model._meta.app_label != GAME_APP:
        raise LookupError(f"{label} is not game data")
    return model


def stored(model: type[Model], field: str, value):
    """A value as the database holds it (a JSON datetime text becomes a datetime)."""
    return model._meta.get_field(field).to_python(value)


def as_json(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def values_as_json(values: dict) -> dict:
    """Values as a finding records them (dates and times as ISO 8601 text)."""
    return {field: as_json(value) for field, value in values.items()}


def same(model: type[Model], values: dict, row: dict) -> bool:
    """Whether `row` (as read) holds `values` (as recorded) in every field."""
    return all(stored(model, field, value) == row[field] for field, value in values.items())


def locked_rows(model: type[Model], ids, fields) -> dict[int, dict]:
    """The rows `ids` with `fields`, locked until the batch commits (PostgreSQL; SQLite
    has one writer at a time anyway)."""
    rows = model.objects.select_for_update().filter(pk__in=list(ids)).values("pk", *fields)
    return {row.pop("pk"): row for row in rows}


# What a dry run planned for rows in its earlier batches: {(model label, id): {field: JSON}}.
Planned = dict[tuple[str, int], dict]


def make(
    changes: list[Change], dry_run: bool, planned: Planned | None = None
) -> tuple[list[Written], list[Conflict]]:
    """Make each change whose row holds what it expects, in order: a later change of
    the same row expects what an earlier one wrote. Outside a dry run, one UPDATE per
    model writes them. A dry run writes nothing, so what it planned for a row in an
    earlier batch (`planned`) stands in for the row's values, as a real run's write
    would."""
    done, conflicts = [], []
    by_model: dict[str, list[Change]] = {}
    for change in changes:
        by_model.setdefault(change.model, []).append(change)
    for label, group in by_model.items():
        model = game_model(label)
        fields = sorted({f for c in group for f in (*c.expect, *c.write)})
        rows = locked_rows(model, {c.object_id for c in group}, fields)
        for object_id, row in rows.items():
            for field, value in (planned or {}).get((label, object_id), {}).items():
                if field in row:
                    row[field] = stored(model, field, value)
        values: dict[int, dict] = {}
        for change in group:
            row = rows.get(change.object_id)
            if row is None or not same(model, change.expect, row):
                holds = None if row is None else {f: as_json(row[f]) for f in change.expect}
                conflicts.append(Conflict(change, holds))
                continue
            held = {f: as_json(row[f]) for f in change.write}
            for field, value in change.write.items():
                row[field] = stored(model, field, value)
                values.setdefault(change.object_id, {})[field] = row[field]
            done.append(Written(change, held))
        if values and not dry_run:
            set_values(model.objects.all(), values)
    return done, conflicts


def describe(values: dict | None) -> str:
    if values is None:
        return "the row no longer exists"
    return ", ".join(f"{field} {_text(value)}" for field, value in values.items())


def _text(value) -> str:
    return "empty" if value is None else str(value)
