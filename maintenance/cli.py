"""Command-line plumbing shared by the maintenance commands: flags generated from the
operation declarations, one-line errors (usage, failed runs, anything unexpected),
Ctrl-C, closed or broken standard streams, and progress display."""

import argparse
import contextlib
import gc
import getpass
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db import DatabaseError, connection
from tqdm import tqdm

from maintenance.engine.interrupts import (
    caused_by_interrupt,
    reset_interrupted_connection,
    sigint_deferred,
    sigint_held,
)
from maintenance.engine.runner import BatchReport, execute
from maintenance.models import MaintenanceRun
from maintenance.oneline import describe, escape, first_line
from maintenance.operations.base import BATCH_SIZE, DRY_RUN, PARTITIONS
from maintenance.reporting import unfixed_findings

logger = logging.getLogger(__name__)

# The exit codes of DESIGN.md "Command line".
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader went away (`... | head -1`)

__all__ = ["describe", "escape", "first_line", "sigint_deferred", "sigint_held"]


def error(message: str, code: int = EXIT_FAILED) -> CommandError:
    """The one-line error every command raises: whatever it quotes (user input, a path, an
    exception's text), control characters and newlines are escaped, so it stays one line."""
    return CommandError(escape(str(message).strip()) or "error", returncode=code)


def usage_error(message: str) -> CommandError:
    return error(message, EXIT_USAGE)


def is_terminal(stream) -> bool:
    """Whether `stream` is an open terminal (a closed stream is None or raises)."""
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False


SETTLE_ATTEMPTS = 6  # about 3 s of retries in all


def settle(run_ids, reason: str) -> None:
    """Record this process's own unfinished runs as failed with `reason`, so none is ever
    left queued or running by a command that stops early (Ctrl-C, a broken stream)."""
    ids = [pk for pk in run_ids if pk]
    if not ids:
        return
    unfinished = (MaintenanceRun.Status.QUEUED, *MaintenanceRun.ACTIVE)

    def record():
        mine = MaintenanceRun.objects.filter(pk__in=ids, status__in=unfinished)
        if not mine.exists():  # a read first: the runner has usually recorded it already
            return
        mine.fail(reason)

    with sigint_held():
        # The interrupt may have cut a statement or transaction in half (even Django's
        # own bookkeeping of it).
        reset_interrupted_connection()
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                record()
                return
            except DatabaseError:
                if connection.in_atomic_block or attempt == SETTLE_ATTEMPTS - 1:
                    raise
                # An interrupted query can leave the connection unusable, and SQLite may
                # be busy with another writer: reconnect and try again shortly.
                connection.close()
                time.sleep(0.1 * 2**attempt)


def _reopen_closed_fds() -> None:
    """Put /dev/null on a closed fd 0, 1 or 2 and give Python a stream for it.

    Python sets sys.stdout to None when fd 1 is closed at start; worse, the next file or
    socket opened would get fd 1 and receive what is printed. /dev/null in its place
    means printing goes nowhere and nothing else lands on a standard fd."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is None:
            handler.setStream(sys.stderr)


def _silence_stdout() -> None:
    """After a broken pipe: point fd 1 at /dev/null so the exit-time flush is quiet."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def _say(line: str) -> None:
    """One line on stderr, whatever state stderr is in."""
    with contextlib.suppress(Exception):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _CommandLogFilter(logging.Filter):
    """On the console, a command reports a run's failure itself in one line; the
    maintenance loggers' records (with their tracebacks) show only at -v 3."""

    def filter(self, record):
        return not record.name.startswith("maintenance")


@contextlib.contextmanager
def console_logs(verbosity: int):
    console = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    quiet = _CommandLogFilter() if verbosity < 3 else None
    for handler in console if quiet else ():
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in console if quiet else ():
            handler.removeFilter(quiet)


def os_user():
    """Who typed the command, for the run's requested_by."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "")


def raise_for_outcome(run, fail_on_findings=False):
    """A finished run's exit code, as a one-line CommandError unless it is 0."""
    if run.status == MaintenanceRun.Status.SKIPPED:
        raise error(f"skipped: {run.error}", EXIT_SKIPPED)
    if run.status == MaintenanceRun.Status.FAILED:
        raise failed_run_error(run)
    if run.status in (MaintenanceRun.Status.PAUSED, MaintenanceRun.Status.CANCELLED):
        # An operator stopped it before its end: not done, so not 0.
        hint = (
            f"; resume with: manage.py maintenance_run resume {run.pk}"
            if run.status == MaintenanceRun.Status.PAUSED
            else ""
        )
        raise error(f"run #{run.pk} was {run.status} after {run.batches} batches{hint}")
    if fail_on_findings:
        left = unfixed_findings(run)
        if left:
            raise error(f"run #{run.pk} left {left} unfixed findings")


def failed_run_error(run) -> CommandError:
    """The one line for a failed run."""
    return error(f"run #{run.pk} failed: {run.error}")


class OneLineErrorParser(CommandParser):
    """Bad usage is one line on stderr and exit code 2, never a usage dump."""

    error_returncode = EXIT_USAGE

    def error(self, message):
        # Arguments are echoed in the message: keep control characters from breaking the line.
        text = f"{self.prog}: error: {escape(message)}"
        if self.called_from_command_line:
            self.exit(self.error_returncode, text + "\n")
        raise CommandError(text, returncode=self.error_returncode)


class OneLineErrorsCommand(BaseCommand):
    """A management command whose usage errors are one line with `usage_exit_code`, and
    whose every other way of stopping is one line too: a failure (exit 1, the traceback
    in the log, on the console at -v 3), Ctrl-C (exit 130), a reader that went away
    (exit 141, silently), closed standard streams (no crash). Runs it started and did
    not finish (`self.own_runs`) are recorded failed, never left queued or running."""

    usage_exit_code = EXIT_USAGE
    failure_exit_code = EXIT_FAILED

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = OneLineErrorParser
        parser.error_returncode = self.usage_exit_code
        return parser

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.own_runs: list[int] = []
        self.show_traceback = False
        self.verbosity = 1

    def execute(self, *args, **options):
        self.verbosity = options.get("verbosity", 1)
        self.show_traceback = bool(options.get("traceback")) or self.verbosity >= 3
        with _ctrl_c_given_back(to_the_caller=not self._called_from_command_line):
            return self._execute(*args, **options)

    def _execute(self, *args, **options):
        try:
            with console_logs(options.get("verbosity", 1)):
                return super().execute(*args, **options)
        except CommandError as failure:
            if caused_by_interrupt(failure.__context__):
                # A database error that a Ctrl-C caused, turned into a one-line error.
                raise KeyboardInterrupt from None
            # Whoever raised it, what it quotes stays on one line (escaping is idempotent).
            raise CommandError(
                escape(str(failure).strip()), returncode=failure.returncode
            ) from None

    def run_from_argv(self, argv):
        _reopen_closed_fds()
        self.stdout, self.stderr = OutputWrapper(sys.stdout), OutputWrapper(sys.stderr)
        try:
            try:
                super().run_from_argv(argv)
            finally:
                sys.stdout.flush()  # here, not at exit: a broken pipe is caught below
        except KeyboardInterrupt:
            stop = (EXIT_INTERRUPTED, "interrupted", True)
        except SystemExit:  # the command ended with its exit code: nothing to stop now
            _done_with_ctrl_c()
            raise
        except BrokenPipeError:
            _silence_stdout()
            stop = (EXIT_BROKEN_PIPE, "output closed by its reader", False)
        except Exception as failure:  # CommandError never gets here: Django handles it
            if caused_by_interrupt(failure):  # Django's cleanup of a cut transaction
                stop = (EXIT_INTERRUPTED, "interrupted", True)
            else:
                with console_logs(self.verbosity):
                    logger.error("%s failed", argv[1:2], exc_info=True)
                if self.show_traceback:
                    with contextlib.suppress(Exception):
                        traceback.print_exc()
                stop = (self.failure_exit_code, f"error: {describe(failure)}", True)
        else:
            _done_with_ctrl_c()
            return
        # Outside the except block, the traceback (and the half-read cursors its frames
        # hold) is gone: collected, their statements release SQLite's locks.
        gc.collect()
        self._stop(*stop)

    def _stop(self, code: int, reason: str, say: bool = True):
        ended = ""
        try:
            with console_logs(self.verbosity):
                settle(self.own_runs, reason)
            if self.own_runs:
                last = MaintenanceRun.objects.filter(pk=self.own_runs[-1]).first()
                ended = f" (run #{last.pk} is {last.status})" if last else ""
                if last and last.status == MaintenanceRun.Status.PAUSED:
                    ended = f" (run #{last.pk} paused: {last.error})"
        except Exception:  # the database is gone too: say so; the lease will expire
            with console_logs(self.verbosity):
                logger.exception("could not record the end of runs %s", self.own_runs)
            ended = f" (could not record the end of run #{self.own_runs[-1]})"
        if say:
            _say(f"CommandError: {escape(reason)}{ended}")
        sys.exit(code)


def run_here(run: MaintenanceRun, progress: "Progress") -> MaintenanceRun:
    """Execute `run` in this process, the last work of a command. Once it has ended, a
    Ctrl-C can no longer change its outcome, only cut the report short (and turn a
    succeeded run into exit 130): from here to the exit it is ignored."""
    ended = execute(run, on_batch=progress.batch)
    _done_with_ctrl_c()
    return ended


@contextlib.contextmanager
def _ctrl_c_given_back(to_the_caller: bool):
    """call_command(): the calling process goes on after the command, so the Ctrl-C the
    command stopped listening to once its work was done (_done_with_ctrl_c) is its own
    again. From the command line the process exits next: it stays ignored until then."""
    own = threading.current_thread() is threading.main_thread() and to_the_caller
    previous = signal.getsignal(signal.SIGINT) if own else None
    try:
        yield
    finally:
        if own and previous is not None:
            signal.signal(signal.SIGINT, previous)


def _done_with_ctrl_c() -> None:
    """The command has done its work and said so: a Ctrl-C from here to the exit changes
    nothing, so it must not turn a finished command into a process killed by SIGINT."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    add_parameter_flag(parser, PARTITIONS)
    parser.add_argument("--inline", action="store_true", help="Run in this process, no broker.")
    parser.add_argument("--wait", action="store_true", help="Follow an enqueued run to its end.")
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help=f"With --wait: give up following after SECONDS (default {WAIT_TIMEOUT}), exit 1.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="Print one JSON object. Never asks: an inline --fix with --json applies "
        "without --no-input.",
    )
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
        help="Do not ask before applying an inline --fix (needed without a terminal).",
    )
    # Django's own options, accepted after the operation name too.
    parser.add_argument(
        "-v",
        "--verbosity",
        type=ascii_int,
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
            size = f" (size {report.size:,})" if report.size else ""
            self.stdout.write(
                f"  batch {report.number}{size}: processed {report.processed}, changed "
                f"{report.changed}, {report.findings} findings, {report.seconds * 1000:.0f} ms"
            )

    def close(self):
        if self.bar is not None:
            self.bar.close()


WAIT_TIMEOUT = 3600


def ascii_int(text: str) -> int:
    """int() for flags: ASCII digits only (int() also takes "١٢" and "1_0")."""
    stripped = text.strip(" ")
    if not (stripped.isascii() and stripped.removeprefix("-").isdigit() and len(stripped) < 20):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(stripped)


def ascii_float(text: str) -> float:
    """float() for flags: ASCII digits only (float() also takes "١٢", "1_0", "inf")."""
    stripped = text.strip(" ")
    if not re.fullmatch(r"-?[0-9]{1,15}(\.[0-9]{1,15})?|-?\.[0-9]{1,15}", stripped, re.ASCII):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return float(stripped)


def seconds(text: str) -> float:
    """A --timeout value: a positive number of seconds, in ASCII digits."""
    stripped = text.strip(" ")
    if not stripped.isascii() or not stripped.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    value = float(stripped)
    if not 0 < value <= 366 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and {366 * 24 * 3600}, not {text}")
    return value


class WaitTimedOut(Exception):
    """--wait gave up; the run goes on on the worker. `run` is as it is now."""

    def __init__(self, message, run):
        super().__init__(message)
        self.run = run


def follow(run, progress, stdout, poll=0.5, patience=10, timeout=WAIT_TIMEOUT):
    """Poll an enqueued run until it ends, reporting batches as they commit. Raises
    WaitTimedOut after `timeout` seconds."""
    seen_batches = 0
    started_waiting = time.monotonic()
    warned = False
    while True:
        if time.monotonic() - started_waiting > timeout:
            run.refresh_from_db()
            raise WaitTimedOut(f"run #{run.pk} is still {run.status} after {timeout:g}s", run)
        run.refresh_from_db()
        new_batches = run.batch_log.filter(number__gt=seen_batches).order_by("number")
        for batch in new_batches:
            seen_batches = batch.number
            progress.batch(BatchReport.of(run, batch))
        if run.is_finished or run.status == MaintenanceRun.Status.PAUSED:
            return run  # a paused run waits for an operator, not for this command
        waited = time.monotonic() - started_waiting
        if run.status == MaintenanceRun.Status.QUEUED and waited > patience and not warned:
            stdout.write(
                f"run #{run.pk} is still queued after {patience}s: is a worker consuming "
                "the 'maintenance' queue? (make worker)"
            )
            warned = True
        time.sleep(poll)
