"""The integrity rules of DESIGN.md. Each rule says which rows it covers, finds the
broken ones among them with one query, and plans a repair for each in Python: the
plan is both what a fix writes and what a dry run reports. No rule deletes anything;
a rule that cannot repair a problem says why."""

from dataclasses import dataclass

from django.db import connections
from django.db.models import F, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce

from chronicles.models import AGE_RANGE, WILLPOWER_RANGE, Character, Chronicle, Post, Scene, XPEntry


@dataclass
class Plan:
    """What to do about one broken row: `after` to write, or `reason` it is left."""

    message: str
    before: dict
    after: dict | None = None
    reason: str = ""


def _clamp(value, low, high):
    return min(max(value, low), high)


class Rule:
    code = ""
    model = None
    description = ""
    fields = ()  # the values a finding records before (and after) a fix
    # A sparse rule is a plain filter the database can answer over the whole table; a
    # dense one compares each row with something else, so it walks all rows in batches.
    sparse = True

    @property
    def model_label(self):
        return self.model._meta.label

    def scope(self, chronicle_id):
        """The rows this rule looks at, optionally in one chronicle."""
        rows = self.model.objects.all()
        return rows if chronicle_id is None else rows.filter(chronicle_id=chronicle_id)

    def broken(self, rows):
        """Narrow `rows` to the broken ones (may annotate what plan() needs)."""
        raise NotImplementedError

    def broken_rows_between(self, rows: QuerySet, low: int, high: int) -> list[dict]:
        """values() of broken(rows) in id order, where `rows` are the rows with ids in
        (low, high]: a dense rule finds them with one pass over that range instead of a
        lookup per row."""
        return list(self.broken(rows).order_by("id").values(*self.values()))

    def values(self):
        return ("id", *self.fields)

    def plan(self, row):
        raise NotImplementedError

    def recheck(self, rows):
        """The rows a fix may still touch: those still broken when it writes."""
        return self.broken(rows)

    def written_too(self, now):
        """Columns every fixed row also gets (e.g. updated_at)."""
        return {}


class CharacterRule(Rule):
    model = Character

    def written_too(self, now):
        return {"updated_at": now}


def _first_storyteller():
    through = Chronicle.storytellers.through
    return Subquery(
        through.objects.filter(chronicle_id=OuterRef("chronicle_id"))
        .order_by("user_id")
        .values("user_id")[:1]
    )


class CharacterWithoutOwner(CharacterRule):
    code = "character_without_owner"
    description = "character has no owner"
    fields = ("owner_id",)

    def broken(self, rows):
        return rows.filter(owner__isnull=True).annotate(storyteller=_first_storyteller())

    def values(self):
        return ("id", "owner_id", "chronicle_id", "storyteller")

    def plan(self, row):
        before = {"owner_id": None}
        if row["storyteller"] is not None:
            return Plan(
                f"character has no owner; give it to the chronicle's first storyteller "
                f"(user {row['storyteller']})",
                before,
                after={"owner_id": row["storyteller"]},
            )
        why = (
            "it has no chronicle"
            if row["chronicle_id"] is None
            else f"chronicle {row['chronicle_id']} has no storyteller"
        )
        return Plan(f"character has no owner; cannot fix: {why}", before, reason=why)


class CharacterTraitOutOfRange(CharacterRule):
    code = "character_trait_out_of_range"
    description = "willpower, temporary_willpower or age outside its legal range"
    fields = ("willpower", "temporary_willpower", "age")

    def broken(self, rows):
        low, high = WILLPOWER_RANGE
        age_low, age_high = AGE_RANGE
        return rows.filter(
            Q(willpower__lt=low)
            | Q(willpower__gt=high)
            | Q(temporary_willpower__lt=0)
            | Q(temporary_willpower__gt=F("willpower"))
            | Q(age__lt=age_low)
            | Q(age__gt=age_high)
        )

    def plan(self, row):
        willpower = _clamp(row["willpower"], *WILLPOWER_RANGE)
        after = {
            "willpower": willpower,
            "temporary_willpower": _clamp(row["temporary_willpower"], 0, willpower),
            "age": None if row["age"] is None else _clamp(row["age"], *AGE_RANGE),
        }
        before = {field: row[field] for field in self.fields}
        wrong = ", ".join(
            f"{field} {before[field]} (legal {self._legal(field, willpower)})"
            for field in self.fields
            if before[field] != after[field]
        )
        changed = {field: value for field, value in after.items() if value != before[field]}
        return Plan(f"out of range: {wrong}; clamp to the nearest legal value", before, changed)

    @staticmethod
    def _legal(field, willpower):
        if field == "willpower":
            return "{}..{}".format(*WILLPOWER_RANGE)
        if field == "age":
            return "{}..{}".format(*AGE_RANGE)
        return f"0..{willpower}"


def against_aggregate(
    rows: QuerySet,
    fields: tuple[str, ...],
    aggregate: QuerySet,
    key: str,
    *,
    select: str,
    where: str,
    join: str = "LEFT JOIN",
) -> tuple[str, tuple]:
    """SQL and params joining `rows` (as r, with id and `fields`) to `aggregate` (as a,
    grouped by `key`) on a.key = r.id, selecting `select` where `where` holds, in id
    order. One join against an aggregate over the batch's id range is what the bare
    detection query does over the whole table, where a subquery per row would probe an
    index once per row (and PostgreSQL JIT-compiles such a plan for a large batch)."""
    rows_sql, rows_params = rows.order_by().values("id", *fields).query.sql_with_params()
    aggregate_sql, aggregate_params = aggregate.query.sql_with_params()
    sql = (
        f"SELECT {select} FROM ({rows_sql}) r {join} ({aggregate_sql}) a ON a.{key} = r.id "
        f"WHERE {where} ORDER BY r.id"
    )
    return sql, (*rows_params, *aggregate_params)


def ledger_sum():
    """A character's ledger sum, 0 where it has no entries."""
    total = (
        XPEntry.objects.filter(character_id=OuterRef("pk"))
        .order_by()
        .values("character_id")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    return Coalesce(Subquery(total, output_field=IntegerField()), 0)


class CharacterXpMismatch(CharacterRule):
    code = "character_xp_mismatch"
    description = "xp differs from the XP ledger sum"
    fields = ("xp",)
    sparse = False

    def broken(self, rows):
        return rows.annotate(ledger=ledger_sum()).exclude(xp=F("ledger"))

    def broken_rows_between(self, rows, low, high):
        ledgers = (
            XPEntry.objects.filter(character_id__gt=low, character_id__lte=high)
            .order_by()
            .values("character_id")
            .annotate(total=Sum("amount"))
        )
        sql, params = against_aggregate(
            rows,
            ("xp",),
            ledgers,
            "character_id",
            select="r.id, r.xp, COALESCE(a.total, 0)",
            where="r.xp <> COALESCE(a.total, 0)",
        )
        # Whole numbers need no conversion: the join's own rows are the findings.
        with connections[rows.db].cursor() as cursor:
            cursor.execute(sql, params)
            return [dict(zip(self.values(), row, strict=True)) for row in cursor.fetchall()]

    def values(self):
        return ("id", "xp", "ledger")

    def plan(self, row):
        before = {"xp": row["xp"]}
        if row["ledger"] < 0:
            why = f"the ledger sums to {row['ledger']} and xp cannot be negative"
            return Plan(
                f"xp is {row['xp']} but the ledger sums to {row['ledger']}; cannot fix: "
                "the ledger is negative, so the character is left as it is",
                before,
                reason=why,
            )
        return Plan(
            f"xp is {row['xp']} but the ledger sums to {row['ledger']}",
            before,
            after={"xp": row["ledger"]},
        )


class MissingParent(Rule):
    """A row whose link to its parent is empty. Nothing says where it belongs, so the
    rule only reports it."""

    parent = ""  # the foreign key's name

    def broken(self, rows):
        return rows.filter(**{f"{self.parent}__isnull": True})

    def plan(self, row):
        why = f"report only: nothing says which {self.parent} it belongs to"
        return Plan(
            f"{self.model._meta.verbose_name} has no {self.parent}; {why}",
            {f"{self.parent}_id": None},
            reason=why,
        )


class SceneWithoutChronicle(MissingParent):
    code = "scene_without_chronicle"
    model = Scene
    description = "scene has no chronicle"
    parent = "chronicle"
    fields = ("chronicle_id",)


class SceneArchivedUnfinished(Rule):
    code = "scene_archived_unfinished"
    model = Scene
    description = "archived scene that is not finished"
    fields = ("archived_at",)

    def broken(self, rows):
        return rows.filter(archived_at__isnull=False, finished=False)

    def plan(self, row):
        return Plan(
            "scene is archived but not finished; clear archived_at",
            {"archived_at": row["archived_at"].isoformat()},
            after={"archived_at": None},
        )


def _newest_post():
    return Subquery(
        Post.objects.filter(scene_id=OuterRef("pk"))
        .order_by("-created_at")
        .values("created_at")[:1]
    )


class SceneActivityStale(Rule):
    code = "scene_activity_stale"
    model = Scene
    description = "last_activity_at differs from its newest post's created_at"
    fields = ("last_activity_at",)
    sparse = False

    def broken(self, rows):
        return (
            self.with_newest(rows)
            .filter(newest__isnull=False)
            .filter(Q(last_activity_at__isnull=True) | ~Q(last_activity_at=F("newest")))
        )

    @staticmethod
    def with_newest(rows):
        return rows.annotate(newest=_newest_post())

    def broken_rows_between(self, rows, low, high):
        newest = (
            Post.objects.filter(scene_id__gt=low, scene_id__lte=high)
            .order_by()
            .values("scene_id")
            .annotate(newest=Max("created_at"))
        )
        stale = against_aggregate(
            rows,
            ("last_activity_at",),
            newest,
            "scene_id",
            select="r.id",
            where="r.last_activity_at IS NULL OR r.last_activity_at <> a.newest",
            join="JOIN",  # a scene without posts has no newest post to lag behind
        )
        # The join picks the few stale scenes; the ORM adds their newest post's time,
        # typed (SQLite returns text). Filtering them again with broken() would make the
        # planner check every scene of the range with a subquery before the join.
        found = self.with_newest(rows.filter(id__in=RawSQL(*stale)))
        return list(found.order_by("id").values(*self.values()))

    def values(self):
        return ("id", "last_activity_at", "newest")

    def plan(self, row):
        old = row["last_activity_at"]
        return Plan(
            f"last_activity_at is {old.isoformat() if old else 'empty'} but the newest post "
            f"is from {row['newest'].isoformat()}",
            {"last_activity_at": old.isoformat() if old else None},
            after={"last_activity_at": row["newest"]},
        )


class PostWithoutScene(MissingParent):
    code = "post_without_scene"
    model = Post
    description = "post has no scene"
    parent = "scene"
    fields = ("scene_id",)

    def scope(self, chronicle_id):
        rows = Post.objects.all()
        return rows if chronicle_id is None else rows.filter(scene__chronicle_id=chronicle_id)


RULES = {
    rule.code: rule
    for rule in (
        CharacterWithoutOwner(),
        CharacterTraitOutOfRange(),
        CharacterXpMismatch(),
        SceneWithoutChronicle(),
        SceneArchivedUnfinished(),
        SceneActivityStale(),
        PostWithoutScene(),
    )
}
