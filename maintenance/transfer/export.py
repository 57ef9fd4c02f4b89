"""Characters as file records, read in keyset batches so memory stays flat."""

from collections import defaultdict

from chronicles.models import Character, XPEntry
from maintenance.transfer.format import dumps, header_line, to_record
from maintenance.transfer.schema import CHARACTER, LEDGER, LEDGER_ROW_FIELDS, ROW_FIELDS

__all__ = ["ROW_FIELDS", "export_lines", "records"]


def records(rows):
    """[(character id, file record)] for character rows (values of ROW_FIELDS): one
    query for all their ledgers."""
    rows = list(rows)
    ledgers = defaultdict(list)
    entries = (
        XPEntry.objects.filter(character_id__in=[row["id"] for row in rows])
        .order_by("character_id", "created_at", "id")
        .values_list("character_id", *LEDGER_ROW_FIELDS)
    )
    for character_id, *entry in entries:
        ledgers[character_id].append(
            {spec.name: value for spec, value in zip(LEDGER, entry, strict=True)}
        )
    return [(row["id"], to_record(_values(row, ledgers[row["id"]]))) for row in rows]


def _values(row, ledger):
    values = {spec.name: row[spec.source] for spec in CHARACTER if spec.kind != "ledger"}
    return {**values, "ledger": ledger}


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
