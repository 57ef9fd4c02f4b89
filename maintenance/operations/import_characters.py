"""import_characters: characters and their XP ledgers from a JSON Lines file.

Each batch reads the next lines from the checkpoint's byte offset, validates every
line, and imports the good ones (characters, ledgers, and owners or chronicles where
the flags allow creating them) in the batch's transaction. A bad line becomes a finding
with its line number and reason and never stops the good ones. A line whose external_id
is already in the database with the same data changes nothing, so importing a file
again changes nothing; with different data it is refused, never overwritten.
"""

import json

from django.contrib.auth import get_user_model

from chronicles.models import Character, Chronicle, XPEntry
from maintenance.operations.base import (
    BatchResult,
    FindingRecord,
    Operation,
    Parameter,
    ParameterError,
)
from maintenance.operations.registry import register
from maintenance.transfer.export import ROW_FIELDS, records
from maintenance.transfer.format import FileError, LineError, parse_line
from maintenance.transfer.reader import TooLong, check_file, read_lines

RULE = "import_bad_line"


def _check_path(path):
    try:
        check_file(path)
    except FileError as error:
        raise ParameterError(str(error)) from None


def _duplicates(path, offset):
    """{line number: first line} for repeated external_ids, found in one pass."""
    first_seen, repeats = {}, {}
    number = 1
    with open(path, "rb") as handle:
        handle.seek(offset)
        for raw in handle:
            number += 1
            try:
                external_id = str(json.loads(raw).get("external_id"))
            except (ValueError, UnicodeDecodeError, AttributeError):
                continue
            if external_id in first_seen:
                repeats[str(number)] = first_seen[external_id]
            else:
                first_seen[external_id] = number
    return repeats


@register
class ImportCharacters(Operation):
    name = "import_characters"
    description = "Import characters and their XP ledgers from a JSON Lines file."
    parameters = (
        Parameter(
            "path",
            "text",
            "The characters file (JSON Lines, format version 1).",
            required=True,
            check=_check_path,
        ),
        Parameter(
            "create_owners",
            "bool",
            "Create owners that do not exist, as inactive users who cannot log in.",
            default=False,
        ),
        Parameter(
            "create_chronicles",
            "bool",
            "Create chronicles that do not exist (matched by name).",
            default=False,
        ),
    )

    def prepare(self, params, now):
        start = check_file(params["path"])
        return {"start": start, "duplicates": _duplicates(params["path"], start)}

    def run_batch(self, params, context, position, batch_size, dry_run):
        offset, first_line = position or (context["start"], 2)
        lines, next_offset, next_line = read_lines(params["path"], offset, first_line, batch_size)
        batch = _Batch(params, context["duplicates"])
        for number, raw in lines:
            batch.read(number, raw)
        batch.resolve()
        created_ids = [] if dry_run else batch.write()
        return BatchResult(
            processed=len(lines),
            changed=len(batch.to_create),
            position=[next_offset, next_line],
            done=len(lines) < batch_size,
            changed_ids=created_ids,
            findings=batch.findings,
        )


class _Batch:
    def __init__(self, params, duplicates):
        self.params = params
        self.duplicates = duplicates
        self.parsed = []
        self.findings = []
        self.to_create = []
        self.unchanged = 0

    def reject(self, line, reason):
        self.findings.append(
            FindingRecord(
                rule=RULE,
                model="import file",
                object_id=line,
                message=f"line {line}: {reason}",
                before={"path": self.params["path"]},
            )
        )

    def read(self, number, raw):
        if isinstance(raw, TooLong):
            self.reject(number, f"line is {raw.size:,} bytes, over the limit; skipped")
        elif str(number) in self.duplicates:
            first = self.duplicates[str(number)]
            self.reject(number, f"duplicate external_id: line {first} has the same one")
        else:
            try:
                self.parsed.append(parse_line(raw, number))
            except LineError as error:
                self.reject(number, str(error))

    def resolve(self):
        """Sort the parsed lines into new characters, unchanged ones and refusals."""
        existing = dict(
            (str(record["external_id"]), record)
            for _, record in records(
                Character.objects.filter(
                    external_id__in=[line.external_id for line in self.parsed]
                ).values(*ROW_FIELDS)
            )
        )
        self.owners = self._known(
            get_user_model().objects, "username", {line.owner for line in self.parsed}
        )
        self.chronicles = self._known(
            Chronicle.objects.order_by("-id"), "name", {line.chronicle for line in self.parsed}
        )
        for line in self.parsed:
            before = existing.get(str(line.external_id))
            if before is not None:
                if before == line.as_dict():
                    self.unchanged += 1
                else:
                    self.reject(
                        line.line,
                        f"external_id {line.external_id} already exists with other data; "
                        "nothing changed",
                    )
            elif (
                line.owner is not None
                and line.owner not in self.owners
                and not (self.params["create_owners"])
            ):
                self.reject(line.line, f"owner {line.owner!r} does not exist (--create-owners)")
            elif (
                line.chronicle is not None
                and line.chronicle not in self.chronicles
                and not (self.params["create_chronicles"])
            ):
                self.reject(
                    line.line,
                    f"chronicle {line.chronicle!r} does not exist (--create-chronicles)",
                )
            else:
                self.to_create.append(line)

    @staticmethod
    def _known(manager, field, names):
        """{name: id} of the rows that exist; for repeated names, the oldest."""
        names = {name for name in names if name is not None}
        return dict(manager.filter(**{f"{field}__in": names}).values_list(field, "id"))

    def write(self):
        """Create the new characters with their ledgers; returns their ids."""
        if not self.to_create:
            return []
        self._create_missing_owners()
        self._create_missing_chronicles()
        characters = Character.objects.bulk_create(
            [
                Character(
                    external_id=line.external_id,
                    name=line.name,
                    owner_id=self.owners.get(line.owner),
                    chronicle_id=self.chronicles.get(line.chronicle),
                    status=line.status,
                    npc=line.npc,
                    xp=line.xp,
                    willpower=line.willpower,
                    temporary_willpower=line.temporary_willpower,
                    age=line.age,
                    created_at=line.created_at,
                )
                for line in self.to_create
            ]
        )
        XPEntry.objects.bulk_create(
            [
                XPEntry(
                    character_id=character.pk,
                    amount=amount,
                    kind=kind,
                    created_at=created_at,
                    note=note,
                )
                for character, line in zip(characters, self.to_create, strict=True)
                for amount, kind, created_at, note in line.ledger
            ]
        )
        return [character.pk for character in characters]

    def _create_missing_owners(self):
        missing = sorted({line.owner for line in self.to_create} - set(self.owners) - {None})
        users = get_user_model()
        created = users.objects.bulk_create(
            [users(username=name, password="!", is_active=False) for name in missing]
        )
        self.owners.update((user.username, user.pk) for user in created)

    def _create_missing_chronicles(self):
        missing = sorted(
            {line.chronicle for line in self.to_create} - set(self.chronicles) - {None}
        )
        created = Chronicle.objects.bulk_create([Chronicle(name=name) for name in missing])
        self.chronicles.update((chronicle.name, chronicle.pk) for chronicle in created)
