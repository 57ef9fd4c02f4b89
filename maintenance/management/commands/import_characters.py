"""manage.py import_characters FILE [--dry-run] [--batch-size N] [--json] ..."""

import json
import os

from maintenance import cli
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun
from maintenance.operations import get
from maintenance.operations.base import BATCH_SIZE, DRY_RUN, ParameterError
from maintenance.reporting import outcome_line, run_summary

OPERATION = "import_characters"


class Command(cli.OneLineErrorsCommand):
    help = (
        "Import characters and their XP ledgers from a JSON Lines file (format version 1). "
        "Bad lines are reported with their number and reason and never stop the good ones; "
        "importing the same file again changes nothing. Recorded as a maintenance run."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The file to import.")
        operation = get(OPERATION)
        for parameter in operation.parameters:
            if parameter.name != "path":
                cli.add_parameter_flag(parser, parameter)
        cli.add_parameter_flag(parser, DRY_RUN)
        cli.add_parameter_flag(parser, BATCH_SIZE)
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument(
            "--fail-on-findings", action="store_true", help="Exit 1 when any line was rejected."
        )

    def handle(self, *args, **options):
        path = options["file"]
        # Absolute where it was typed: the run record (and a resume) must not depend on
        # the working directory of whoever reads it later.
        raw = {"path": os.path.abspath(path) if path.strip() else path}
        for name in ("create_owners", "create_chronicles", "dry_run", "batch_size"):
            if options.get(name) is not None:
                raw[name] = options[name]
        try:
            run = create_run(
                OPERATION, raw, trigger=MaintenanceRun.Trigger.CLI, requested_by=cli.os_user()
            )
        except ParameterError as error:
            raise cli.usage_error(f"{OPERATION}: {error}") from None
        self.own_runs.append(run.pk)
        progress = cli.Progress(self.stdout, options["verbosity"], enabled=not options["json"])
        try:
            run = cli.run_here(run, progress)
        finally:
            progress.close()
        self._report(run, options)

    def _report(self, run, options):
        bad = list(run.finding_set.order_by("object_id").values_list("object_id", "message"))
        if options["json"]:
            summary = run_summary(run)
            summary["bad_lines"] = [{"line": line, "reason": m} for line, m in bad]
            self.stdout.write(json.dumps(summary))
        else:
            style = self.style.SUCCESS if run.status == "succeeded" else self.style.ERROR
            self.stdout.write(style(outcome_line(run)))
            verb = "would create" if run.dry_run else "created"
            unchanged = run.processed - run.changed - len(bad)
            self.stdout.write(
                f"{verb} {run.changed:,} characters; {unchanged:,} already there unchanged; "
                f"{len(bad):,} lines rejected"
            )
            for _, message in bad:
                self.stdout.write(self.style.WARNING(f"  {message}"))
        cli.raise_for_outcome(run, options["fail_on_findings"])
