"""manage.py export_characters [--chronicle-id N] [--output FILE|-] [--batch-size N]"""

import contextlib
import os
import stat
import tempfile

from django.db import DatabaseError

from maintenance import cli
from maintenance.operations.base import BATCH_SIZE, DEFAULT_SIZE, ParameterError
from maintenance.operations.common import CHRONICLE_ID
from maintenance.transfer.export import export_lines


class Command(cli.OneLineErrorsCommand):
    help = (
        "Write characters with their owner, chronicle, traits and XP ledger as JSON Lines "
        "(format version 1; see the README), one character a line. A regular file (or the "
        "file a symlink points to) is replaced whole, keeping its mode; a FIFO or device is "
        "written to directly. If the reader of stdout goes away, it stops quietly (exit 141)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--chronicle-id", metavar="N", help="Only this chronicle.")
        parser.add_argument(
            "--output", "-o", default="-", metavar="FILE", help="Where to write (default: stdout)."
        )
        parser.add_argument(
            "--batch-size", metavar="N", help="Characters read per query (1..10000, default 1000)."
        )

    def handle(self, *args, **options):
        try:
            chronicle_id = CHRONICLE_ID.clean(options["chronicle_id"])
            batch_size = BATCH_SIZE.clean(options["batch_size"]) or DEFAULT_SIZE
        except ParameterError as error:
            raise cli.usage_error(str(error)) from None
        lines = export_lines(chronicle_id, batch_size)
        output = options["output"]
        try:
            if output == "-":
                for line in lines:
                    self.stdout.write(line)
                return
            count = write_export(output, lines)
        except DatabaseError as error:
            raise cli.error(f"database error: {cli.first_line(error)}") from None
        except OSError as error:
            if isinstance(error, BrokenPipeError) and output == "-":
                raise  # the reader of stdout went away: quiet, see OneLineErrorsCommand
            reason = error.strerror or cli.first_line(error)
            raise cli.error(f"cannot write {output}: {reason}") from None
        self.stderr.write(f"Exported {count:,} characters to {cli.escape(output)}.")


def write_export(path: str, lines) -> int:
    """Write `lines` to `path` without ever changing what kind of thing `path` is, and
    return the number of characters written (the header line is not one).

    A symlink (or chain) is followed: its final target is written and the links stay.
    A regular file is written beside itself and renamed over, so a failed export leaves
    no half file; it keeps its mode. Anything else that exists (a FIFO, a device such as
    /dev/null) is opened and written directly; a directory is refused."""
    target = os.path.realpath(path)
    try:
        status = os.stat(target)
    except FileNotFoundError:
        return _replace(target, lines, mode=None)
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(21, "Is a directory")
    if stat.S_ISREG(status.st_mode):
        return _replace(target, lines, mode=stat.S_IMODE(status.st_mode))
    with open(target, "w", encoding="utf-8") as handle:
        return _write(handle, lines)


def _write(handle, lines) -> int:
    count = -1
    for line in lines:
        handle.write(line + "\n")
        count += 1
    return count


def _replace(target: str, lines, mode: int | None) -> int:
    """Write a temporary file beside `target`, then rename it over `target`."""
    if mode is None:  # a new file gets what open() would give it
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(
            "w",
            encoding="utf-8",
            dir=os.path.dirname(target),
            prefix=f".{os.path.basename(target)}.",
            suffix=".part",
            delete=False,
        ) as handle:
            temporary = handle.name
            count = _write(handle, lines)
            os.fchmod(handle.fileno(), mode)
        os.replace(temporary, target)
        temporary = None
        return count
    finally:  # whatever stopped the export (an error, Ctrl-C), no .part file stays
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
