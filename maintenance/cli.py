"""Command-line plumbing for run_maintenance: flags generated from the operation
declarations, one-line parser errors, and progress display."""

import argparse
import getpass
import os
import sys
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from maintenance.models import MaintenanceRun
from maintenance.operations.base import BATCH_SIZE, DRY_RUN
from maintenance.reporting import unfixed_findings
from maintenance.runner import BatchReport

# The exit codes of DESIGN.md "Command line".
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3


def os_user():
    """Who typed the command, for the run's requested_by."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "")


def raise_for_outcome(run, fail_on_findings=False):
    """A finished run's exit code, as a one-line CommandError unless it is 0."""
    if run.status == MaintenanceRun.Status.SKIPPED:
        raise CommandError(f"skipped: {run.error}", returncode=EXIT_SKIPPED)
    if run.status == MaintenanceRun.Status.FAILED:
        raise CommandError(f"run #{run.pk} failed: {run.error}", returncode=EXIT_FAILED)
    if fail_on_findings:
        left = unfixed_findings(run)
        if left:
            raise CommandError(
                f"run #{run.pk} left {left} unfixed findings", returncode=EXIT_FAILED
            )


class OneLineErrorParser(CommandParser):
    """Bad usage is one line on stderr and exit code 2, never a usage dump."""

    error_returncode = EXIT_USAGE

    def error(self, message):
        # Arguments are echoed in the message: keep control characters from breaking the line.
        printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        text = f"{self.prog}: error: {printable}"
        if self.called_from_command_line:
            self.exit(self.error_returncode, text + "\n")
        raise CommandError(text, returncode=self.error_returncode)


class OneLineErrorsCommand(BaseCommand):
    """A management command whose usage errors are one line with `usage_exit_code`."""

    usage_exit_code = EXIT_USAGE

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = OneLineErrorParser
        parser.error_returncode = self.usage_exit_code
        return parser


def add_parameter_flag(parser, parameter):
    """The flag for one declared parameter. Values stay text: Parameter.clean() is the
    single place that converts and validates them."""
    if parameter.kind == "bool":
        parser.add_argument(
            parameter.flag,
            dest=parameter.name,
            action="store_true",
            default=None,
            help=parameter.help,
        )
        return
    metavar = {"int": "N", "text": parameter.name.upper()}.get(parameter.kind, "A,B")
    default = "" if parameter.default is None else f" (default: {parameter.default})"
    parser.add_argument(
        parameter.flag,
        dest=parameter.name,
        metavar=metavar,
        default=None,
        help=parameter.help if "default" in parameter.help else parameter.help + default,
    )


def add_run_options(parser):
    add_parameter_flag(parser, DRY_RUN)
    add_parameter_flag(parser, BATCH_SIZE)
    parser.add_argument("--inline", action="store_true", help="Run in this process, no broker.")
    parser.add_argument("--wait", action="store_true", help="Follow an enqueued run to its end.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument(
        "--fail-on-findings",
        action="store_true",
        help="Exit 1 when the run leaves unfixed findings.",
    )
    parser.add_argument(
        "--no-input",
        "--noinput",
        action="store_false",
        dest="interactive",
        help="Do not ask before applying an inline --fix.",
    )
    # Django's own options, accepted after the operation name too.
    parser.add_argument(
        "-v",
        "--verbosity",
        type=int,
        choices=[0, 1, 2, 3],
        default=argparse.SUPPRESS,
        help="2 shows per-batch detail.",
    )
    parser.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS)


class Progress:
    """A progress bar on a terminal; per-batch lines at verbosity 2."""

    def __init__(self, stdout, verbosity, enabled):
        self.stdout = stdout
        self.verbosity = verbosity
        self.show_bar = enabled and sys.stderr.isatty() and verbosity >= 1
        self.bar = None

    def batch(self, report):
        if self.show_bar:
            if self.bar is None:
                self.bar = tqdm(total=report.total, unit=" rows", file=sys.stderr)
            self.bar.update(report.processed)
        if self.verbosity >= 2:
            self.stdout.write(
                f"  batch {report.number}: processed {report.processed}, changed "
                f"{report.changed}, {report.findings} findings, {report.seconds * 1000:.0f} ms"
            )

    def close(self):
        if self.bar is not None:
            self.bar.close()


def follow(run, progress, stdout, poll=0.5, patience=10):
    """Poll an enqueued run until it ends, reporting batches as they commit."""
    seen_batches = 0
    started_waiting = time.monotonic()
    warned = False
    while True:
        run.refresh_from_db()
        new_batches = run.batch_log.filter(number__gt=seen_batches).order_by("number")
        for batch in new_batches:
            seen_batches = batch.number
            progress.batch(BatchReport.of(run, batch))
        if run.is_finished:
            return run
        waited = time.monotonic() - started_waiting
        if run.status == MaintenanceRun.Status.QUEUED and waited > patience and not warned:
            stdout.write(
                f"run #{run.pk} is still queued after {patience}s: is a worker consuming "
                "the 'maintenance' queue? (make worker)"
            )
            warned = True
        time.sleep(poll)
