"""Characters as file records, read in keyset batches so memory stays flat."""

from collections import defaultdict

from chronicles.models import Character, XPEntry
from maintenance.transfer.format import character_dict, dumps, header_line

ROW_FIELDS = (
    "id",
    "external_id",
    "name",
    "owner__username",
    "chronicle__name",
    "status",
    "npc",
    "xp",
    "willpower",
    "temporary_willpower",
    "age",
    "created_at",
)


def records(rows):
    """[(character id, file record)] for character rows (values of ROW_FIELDS): one
    query for all their ledgers."""
    rows = list(rows)
    ledgers = defaultdict(list)
    entries = (
        XPEntry.objects.filter(character_id__in=[row["id"] for row in rows])
        .order_by("character_id", "created_at", "id")
        .values_list("character_id", "amount", "kind", "created_at", "note")
    )
    for character_id, *entry in entries:
        ledgers[character_id].append(entry)
    return [
        (
            row["id"],
            character_dict(
                row["external_id"],
                row["name"],
                row["owner__username"],
                row["chronicle__name"],
                row["status"],
                row["npc"],
                row["xp"],
                row["willpower"],
                row["temporary_willpower"],
                row["age"],
                row["created_at"],
                ledgers[row["id"]],
            ),
        )
        for row in rows
    ]


def export_lines(chronicle_id=None, batch_size=1000):
    """The file, line by line: the header, then one character per line in id order."""
    yield header_line()
    characters = Character.objects.all()
    if chronicle_id is not None:
        characters = characters.filter(chronicle_id=chronicle_id)
    after = 0
    while True:
        batch = characters.filter(id__gt=after).order_by("id").values(*ROW_FIELDS)[:batch_size]
        exported = records(batch)
        for _, record in exported:
            yield dumps(record)
        if len(exported) < batch_size:
            return
        after = exported[-1][0]
