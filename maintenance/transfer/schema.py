"""The one declaration of a character line: its fields in file order, their types and
the ranges and lengths the database can hold. Import validation, the Character and
XPEntry construction, and export all read it, so a field is described once.

Limits come from the real model fields (CharField max_length, the IntegerField range of
Django's portable integer ranges), narrowed by the game's legal ranges; they are checked
in Python, so a file that imports on SQLite imports on PostgreSQL and the other way round.
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.backends.base.operations import BaseDatabaseOperations

from chronicles.models import AGE_RANGE, WILLPOWER_RANGE, Character, Chronicle, XPEntry

KINDS = ("uuid", "text", "choice", "bool", "int", "moment", "ledger")


@dataclass(frozen=True)
class FieldSpec:
    """One key of a line: `name` in the file, `source` the ORM path export reads."""

    name: str
    kind: str  # one of KINDS
    source: str
    nullable: bool = False
    blank: bool = False  # "" is allowed (a note), else text must not be blank
    low: int | None = None
    high: int | None = None
    max_length: int | None = None
    choices: tuple = ()
    nonzero: bool = False

    @property
    def column(self) -> str | None:
        """The model field this key is written to directly; None for a lookup
        (owner, chronicle) or the ledger."""
        return None if "__" in self.source or self.kind == "ledger" else self.source


def _field(model, name):
    return model._meta.get_field(name)


def _int_range(model, name, legal=(None, None)):
    """The field's storable range, narrowed by the game's legal range."""
    low, high = BaseDatabaseOperations.integer_field_ranges[_field(model, name).get_internal_type()]
    if legal[0] is not None:
        low = max(low, legal[0])
    if legal[1] is not None:
        high = min(high, legal[1])
    return {"low": low, "high": high}


def _length(model, name):
    return _field(model, name).max_length


CHARACTER: tuple[FieldSpec, ...] = (
    FieldSpec("external_id", "uuid", "external_id"),
    FieldSpec("name", "text", "name", max_length=_length(Character, "name")),
    FieldSpec(
        "owner",
        "text",
        "owner__username",
        nullable=True,
        max_length=_length(get_user_model(), get_user_model().USERNAME_FIELD),
    ),
    FieldSpec(
        "chronicle",
        "text",
        "chronicle__name",
        nullable=True,
        max_length=_length(Chronicle, "name"),
    ),
    FieldSpec("status", "choice", "status", choices=tuple(Character.Status.values)),
    FieldSpec("npc", "bool", "npc"),
    FieldSpec("xp", "int", "xp", **_int_range(Character, "xp", (0, None))),
    FieldSpec(
        "willpower", "int", "willpower", **_int_range(Character, "willpower", WILLPOWER_RANGE)
    ),
    # the upper bound is the line's willpower, checked after the fields
    FieldSpec(
        "temporary_willpower",
        "int",
        "temporary_willpower",
        **_int_range(Character, "temporary_willpower", (0, None)),
    ),
    FieldSpec("age", "int", "age", nullable=True, **_int_range(Character, "age", AGE_RANGE)),
    FieldSpec("created_at", "moment", "created_at"),
    FieldSpec("ledger", "ledger", "xp_entries"),
)

LEDGER: tuple[FieldSpec, ...] = (
    FieldSpec("amount", "int", "amount", nonzero=True, **_int_range(XPEntry, "amount")),
    FieldSpec("kind", "choice", "kind", choices=tuple(XPEntry.Kind.values)),
    FieldSpec("created_at", "moment", "created_at"),
    FieldSpec("note", "text", "note", blank=True, max_length=_length(XPEntry, "note")),
)

FIELDS = tuple(spec.name for spec in CHARACTER)
LEDGER_FIELDS = tuple(spec.name for spec in LEDGER)
# What export reads per character (values()); the ledger is read in its own query.
ROW_FIELDS = ("id", *(spec.source for spec in CHARACTER if spec.kind != "ledger"))
LEDGER_ROW_FIELDS = tuple(spec.source for spec in LEDGER)
XP_RANGE = (CHARACTER[FIELDS.index("xp")].low, CHARACTER[FIELDS.index("xp")].high)
