"""import_characters: characters and their XP ledgers from a JSON Lines file.

Each batch reads the next lines from the checkpoint's byte offset, validates every
line, and imports the good ones (characters, ledgers, and owners or chronicles where
the flags allow creating them) in the batch's transaction. A bad line becomes a finding
with its line number and reason and never stops the good ones. A line whose external_id
is already in the database with the same data changes nothing, so importing a file
again changes nothing; with different data it is refused, never overwritten.

The run records the file's identity (absolute path, size, modification time, SHA-256)
when it starts, and resumes only onto that same file. Repeated external_ids are found
with a disk-backed index (maintenance.transfer.index), so memory and the checkpoint
stay small however many lines the file has.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DataError, IntegrityError, transaction

from chronicles.models import Character, Chronicle, XPEntry
from maintenance.operations.base import (
    Batch,
    FindingRecord,
    Operation,
    Outcome,
    Parameter,
    ParameterError,
)
from maintenance.operations.registry import register
from maintenance.transfer import index
from maintenance.transfer.export import ROW_FIELDS, records
from maintenance.transfer.format import FileError, LineError, escaped, load_record, validate
from maintenance.transfer.reader import (
    TooLong,
    check_file,
    file_identity,
    read_lines,
    stat_identity,
)
from maintenance.transfer.schema import CHARACTER, LEDGER

RULE = "import_bad_line"
# What a database may still refuse a line with; the line becomes a finding. (ValueError
# covers a driver that cannot encode a value, e.g. psycopg and a lone surrogate.)
WRITE_ERRORS = (DataError, IntegrityError, ValueError)


def _check_path(path):
    try:
        check_file(path)
    except FileError as error:
        raise ParameterError(str(error)) from None


def _same_file(path, recorded: dict, content: bool) -> bool:
    """Whether `path` is still the recorded file (with `content`, hash it too)."""
    try:
        now = file_identity(path) if content else stat_identity(path)
    except OSError:
        return False
    return all(recorded.get(key) == value for key, value in now.items())


@register
class ImportCharacters(Operation):
    name = "import_characters"
    # It creates and updates characters and ledgers from a file: undo it by hand.
    revertable = False
    # The file may hold new lines by now: an import is never done "already".
    coalesces = False
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
        identity = file_identity(params["path"])
        index.sweep(settings.MAINTENANCE_RESUME_WINDOW_HOURS * 3600)
        index.ensure(params["path"], start, identity)
        return {"start": start, "file": identity}

    def can_resume(self, params: dict, context: dict) -> bool:
        """Only onto the very file the checkpoint was made from."""
        recorded = context.get("file")
        return isinstance(recorded, dict) and _same_file(params["path"], recorded, content=True)

    def walk(self, ctx):
        return FileLines(ctx.params["path"], ctx.prepared)

    def process(self, ctx, batch):
        prepared = ctx.prepared
        lines = _Batch(
            ctx.params, index.ensure(ctx.params["path"], prepared["start"], prepared["file"])
        )
        lines.read(batch.items)
        lines.resolve()
        created_ids = [] if ctx.dry_run else lines.write()
        if batch.done:
            index.discard(prepared["file"], prepared["start"])
        return Outcome(
            changed=len(lines.to_create), changed_ids=created_ids, findings=lines.findings
        )


class FileLines:
    """The file's lines after a byte offset; the position is [byte offset, line number].
    Its length is not known without reading it, so it has no count."""

    def __init__(self, path: str, prepared: dict):
        self.path = path
        self.prepared = prepared

    def batch_after(self, position, size):
        if not _same_file(self.path, self.prepared["file"], content=False):
            raise FileError(
                f"{self.path} changed since this import started; the next run imports it afresh"
            )
        offset, first_line = position or (self.prepared["start"], 2)
        lines, next_offset, next_line, at_end = read_lines(self.path, offset, first_line, size)
        if at_end and not lines:  # nothing left to process: the index is done with
            index.discard(self.prepared["file"], self.prepared["start"])
        return Batch(
            items=lines, processed=len(lines), position=[next_offset, next_line], done=at_end
        )

    def count_after(self, position):
        return None


class _Batch:
    def __init__(self, params, id_index):
        self.params = params
        self.id_index = id_index
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

    def read(self, lines):
        """Parse and validate the lines; a repeated external_id loses to its first line."""
        loaded = []
        for number, raw in lines:
            if isinstance(raw, TooLong):
                self.reject(number, f"line is {raw.size:,} bytes, over the limit; skipped")
                continue
            try:
                record = load_record(raw)
            except LineError as error:
                self.reject(number, str(error))
                continue
            loaded.append((number, record, index.id_key(record.get("external_id"))))
        firsts = index.first_lines(self.id_index, [key for *_, key in loaded if key])
        for number, record, key in loaded:
            first = firsts.get(key, number)
            if first != number:
                self.reject(number, f"duplicate external_id: line {first} has the same one")
                continue
            try:
                self.parsed.append(validate(record, number))
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
        """Create the new characters with their ledgers; returns their ids. Should the
        database still refuse the batch, each line is tried alone in a savepoint and a
        refused one becomes a finding."""
        if not self.to_create:
            return []
        try:
            return self._write_saved(self.to_create)
        except WRITE_ERRORS:
            pass
        created = []
        for line in list(self.to_create):
            try:
                created += self._write_saved([line])
            except WRITE_ERRORS as error:
                self.to_create.remove(line)
                reason = escaped(str(error).strip().split("\n")[0], 200)
                self.reject(line.line, f"the database refused it ({reason}); nothing written")
        return created

    def _write_saved(self, lines):
        """_write in a savepoint; on failure the owner and chronicle maps are as before."""
        owners, chronicles = dict(self.owners), dict(self.chronicles)
        try:
            with transaction.atomic():
                return self._write(lines)
        except WRITE_ERRORS:
            self.owners, self.chronicles = owners, chronicles
            raise

    def _write(self, lines):
        self._create_missing_owners(lines)
        self._create_missing_chronicles(lines)
        characters = Character.objects.bulk_create([self._character(line) for line in lines])
        XPEntry.objects.bulk_create(
            [
                XPEntry(character_id=character.pk, **_columns(LEDGER, entry))
                for character, line in zip(characters, lines, strict=True)
                for entry in line.ledger
            ]
        )
        return [character.pk for character in characters]

    def _character(self, line):
        return Character(
            owner_id=self.owners.get(line.owner),
            chronicle_id=self.chronicles.get(line.chronicle),
            **_columns(CHARACTER, line.values),
        )

    def _create_missing_owners(self, lines):
        missing = sorted({line.owner for line in lines} - set(self.owners) - {None})
        users = get_user_model()
        created = users.objects.bulk_create(
            [users(username=name, password="!", is_active=False) for name in missing]
        )
        self.owners.update((user.username, user.pk) for user in created)

    def _create_missing_chronicles(self, lines):
        missing = sorted({line.chronicle for line in lines} - set(self.chronicles) - {None})
        created = Chronicle.objects.bulk_create([Chronicle(name=name) for name in missing])
        self.chronicles.update((chronicle.name, chronicle.pk) for chronicle in created)


def _columns(specs, values):
    """Model keyword arguments for the fields the schema writes directly."""
    return {spec.column: values[spec.name] for spec in specs if spec.column}
