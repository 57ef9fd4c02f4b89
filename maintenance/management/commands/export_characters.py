"""manage.py export_characters [--chronicle-id N] [--output FILE|-]"""

import os
import tempfile

from django.core.management.base import CommandError
from django.db import DatabaseError

from maintenance.cli import OneLineErrorsCommand
from maintenance.operations.base import ParameterError
from maintenance.operations.common import CHRONICLE_ID
from maintenance.transfer.export import export_lines


class Command(OneLineErrorsCommand):
    help = (
        "Write characters with their owner, chronicle, traits and XP ledger as JSON Lines "
        "(format version 1; see the README), one character a line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--chronicle-id", metavar="N", help="Only this chronicle.")
        parser.add_argument(
            "--output", "-o", default="-", metavar="FILE", help="Where to write (default: stdout)."
        )
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Characters read per query (default 1000)."
        )

    def handle(self, *args, **options):
        try:
            chronicle_id = CHRONICLE_ID.clean(options["chronicle_id"])
        except ParameterError as error:
            raise CommandError(str(error), returncode=2) from None
        if not 1 <= options["batch_size"] <= 10000:
            raise CommandError("--batch-size must be between 1 and 10000", returncode=2)
        lines = export_lines(chronicle_id, options["batch_size"])
        try:
            if options["output"] == "-":
                for line in lines:
                    self.stdout.write(line)
                return
            count = self._write_file(options["output"], lines)
        except DatabaseError as error:
            first_line = str(error).strip().splitlines()[0]
            raise CommandError(f"database error: {first_line}", returncode=1) from None
        self.stderr.write(f"Exported {count:,} characters to {options['output']}.")

    @staticmethod
    def _write_file(path, lines):
        """Write beside the target and rename, so a failed export leaves no half file."""
        directory = os.path.dirname(os.path.abspath(path))
        count, temporary = -1, None
        try:
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=directory, delete=False, suffix=".part"
            ) as handle:
                temporary = handle.name
                for line in lines:
                    handle.write(line + "\n")
                    count += 1
            os.replace(temporary, path)
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error.strerror}", returncode=1) from None
        finally:
            if temporary and os.path.exists(temporary):
                os.unlink(temporary)
        return count
