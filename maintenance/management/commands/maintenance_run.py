"""manage.py maintenance_run list|show|pause|resume|cancel|revert|apply: look at runs,
control them, undo one, or apply a reviewed dry run."""

import argparse
import json

from django.core.management.base import CommandError

from maintenance import cli
from maintenance.engine import control
from maintenance.engine.states import Status
from maintenance.reporting import partition_lines, run_progress_line, run_summary


class Command(cli.OneLineErrorsCommand):
    help = (
        "List and show maintenance runs; pause, resume or cancel one. A running run stops "
        "at its next batch boundary; a resumed run continues from its checkpoint."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(
            dest="action", metavar="ACTION", required=True, parser_class=cli.OneLineErrorParser
        )
        listing = actions.add_parser("list", help="The latest runs, newest first.")
        listing.add_argument("--operation", metavar="OP", choices=_operation_names())
        listing.add_argument("--status", metavar="S", choices=Status.values)
        listing.add_argument("--limit", metavar="N", type=_limit, default=20)
        listing.add_argument("--json", action="store_true", help="Print a JSON list.")
        for name, text in (
            ("show", "One run with its progress, rate and ETA."),
            ("pause", "Pause: at once if queued, else at the next batch boundary."),
            ("resume", "Put a paused or interrupted run back on the queue."),
            ("cancel", "Cancel: at once if not running, else at the next batch boundary."),
        ):
            action = actions.add_parser(name, help=text, description=text)
            action.add_argument("run_id", metavar="RUN_ID")
            action.add_argument("--json", action="store_true", help="Print the run as JSON.")
            if name == "resume":
                action.add_argument(
                    "--inline", action="store_true", help="Run the rest in this process."
                )

        for name, operation, text in (
            ("revert", "revert_run", "Undo what a finished run changed (a run of its own)."),
            ("apply", "apply_run", "Apply exactly what a finished dry run planned."),
        ):
            action = actions.add_parser(name, help=text, description=text)
            action.add_argument("run_id", metavar="RUN_ID")
            action.set_defaults(operation=operation)
            cli.add_run_options(action)

    def handle(self, *args, **options):
        if options["action"] == "list":
            self._list(options)
            return
        if options["action"] in ("revert", "apply"):
            self._launch(options)
            return
        try:
            run = control.find(options["run_id"])
            run = self._act(run, options)
        except (control.UnknownRun, control.NotAllowed) as error:
            raise CommandError(cli.first_line(error), returncode=cli.EXIT_USAGE) from None
        if options["json"]:
            self.stdout.write(json.dumps(run_summary(run)))
        else:
            self.stdout.write(run_progress_line(run))
            for line in partition_lines(run):
                self.stdout.write(line)
        if options["action"] == "resume" and options.get("inline"):
            self._inline_outcome(run)

    def _launch(self, options):
        """revert and apply are runs like any: run_maintenance starts and reports them,
        and this command settles them if it stops early."""
        from maintenance.management.commands.run_maintenance import Command as RunMaintenance

        launcher = RunMaintenance(stdout=self.stdout._out, stderr=self.stderr._out)
        launcher.style, launcher.own_runs = self.style, self.own_runs
        launcher.handle(**options)

    @staticmethod
    def _inline_outcome(run):
        """The rest of the run, done here: 0 only when it succeeded."""
        if run.status in (Status.INTERRUPTED, Status.RUNNING):
            raise cli.error(
                f"run #{run.pk} is {run.status}: {run.error or 'another runner holds it'}",
                cli.EXIT_SKIPPED,
            )
        cli.raise_for_outcome(run)

    def _act(self, run, options):
        action = options["action"]
        if action == "show":
            return run
        if action != "resume":
            return getattr(control, action)(run)
        if options["inline"]:
            control.resume(run, send=None)
            progress = cli.Progress(self.stdout, options["verbosity"], enabled=not options["json"])
            try:
                return cli.run_here(run, progress)
            finally:
                progress.close()
        from maintenance.engine.enqueue import BrokerUnavailable, send

        try:
            return control.resume(run, send=send)
        except BrokerUnavailable as error:
            raise CommandError(
                f"run #{run.pk} is queued but could not be sent ({cli.first_line(error)}); "
                "the sweeper sends it again once the broker is back",
                returncode=cli.EXIT_FAILED,
            ) from None

    def _list(self, options):
        runs = control.MaintenanceRun.objects.order_by("-created_at", "-id")
        if options["operation"]:
            runs = runs.filter(operation=options["operation"])
        if options["status"]:
            runs = runs.filter(status=options["status"])
        runs = list(runs[: options["limit"]])
        if options["json"]:
            self.stdout.write(json.dumps([run_summary(run) for run in runs]))
            return
        if not runs:
            self.stdout.write("No runs.")
        for run in runs:
            self.stdout.write(run_progress_line(run))


def _operation_names():
    from maintenance import operations

    return [operation.name for operation in operations.all_operations()]


def _limit(text):
    number = cli.ascii_int(text)
    if not 1 <= number <= 10000:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 10000, not {text!r}")
    return number
