"""manage.py monitor_validation [--json] [--period HOURS]: health for alerting.

Exit codes follow the Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, and 3
UNKNOWN when the health cannot be determined (bad usage, database unreachable, a
schedule that cannot be evaluated). CRITICAL outranks UNKNOWN. Whatever goes wrong, the
output is one line, never a traceback. Stuck work (runs past their lease or queued too
long, the broker, missed due times) is a check each; see maintenance/monitoring.py."""

import argparse
import json
import re
import sys

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError

from maintenance.cli import OneLineErrorsCommand
from maintenance.monitoring import (
    CRITICAL,
    OK,
    SEVERITY,
    UNKNOWN,
    WARNING,
    collect,
    error_line,
    exit_code,
)

EXIT_UNKNOWN = SEVERITY[UNKNOWN]


def _period(text):
    # ASCII digits only: float() also takes "١٢", "1_0", "inf" and "nan".
    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", text.strip(" "), re.ASCII):
        raise argparse.ArgumentTypeError(f"not a number of hours: {text!r}")
    hours = float(text)
    if not 0 < hours <= 24 * 366:
        raise argparse.ArgumentTypeError(f"must be between 0 and {24 * 366} hours, not {text}")
    return int(hours) if hours.is_integer() else hours


class Command(OneLineErrorsCommand):
    help = "Report the health of the maintenance jobs for alerting (Nagios exit codes)."

    usage_exit_code = EXIT_UNKNOWN

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument(
            "--period",
            type=_period,
            default=24,
            metavar="HOURS",
            help="Count runs, failures and changes over the last HOURS (default 24).",
        )

    def execute(self, *args, **options):
        # System checks and the database connection run before handle(): an error
        # there (say a DATABASE_URL naming a backend that is not installed) is UNKNOWN.
        try:
            return super().execute(*args, **options)
        except (CommandError, SystemExit, KeyboardInterrupt):
            raise
        except Exception as error:
            raise CommandError(
                f"UNKNOWN: cannot determine the health: {error_line(error)}",
                returncode=EXIT_UNKNOWN,
            ) from None

    def handle(self, *args, **options):
        try:
            report = collect(options["period"])
        except DatabaseError as error:
            raise CommandError(
                f"UNKNOWN: cannot read the database: {error_line(error)}",
                returncode=EXIT_UNKNOWN,
            ) from None
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self._print(report)
        code = exit_code(report["health"])
        if code:
            sys.exit(code)

    def _print(self, report):
        style = {
            OK: self.style.SUCCESS,
            WARNING: self.style.WARNING,
            CRITICAL: self.style.ERROR,
            UNKNOWN: self.style.ERROR,
        }
        self.stdout.write(style[report["health"]](f"MAINTENANCE {report['health']}"))
        self.stdout.write(f"at {report['timestamp']}, period {report['period_hours']}h")
        for check in report["checks"]:
            self.stdout.write(
                f"  {style[check['status']](check['status']):<8} {check['name']}: {check['detail']}"
            )
        for name, info in report["operations"].items():
            self.stdout.write(
                f"  {name}: {info['runs_in_period']} runs, {info['failures_in_period']} failed "
                "in the period"
            )
        depth = report["queue_depth"]
        waiting = "unknown" if depth is None else f"{depth:,} waiting"
        self.stdout.write(f"Queue {settings.MAINTENANCE_QUEUE}: {waiting}")
        c, ch, s, f = (report[k] for k in ("characters", "chronicles", "scenes", "findings"))
        self.stdout.write(
            f"Characters: {c['total']:,} ({c['created_in_period']:,} created, "
            f"{c['modified_in_period']:,} modified in the period)"
        )
        self.stdout.write(
            f"Chronicles: {ch['total']:,} ({ch['active']:,} active, {ch['archived']:,} archived)"
        )
        self.stdout.write(
            f"Scenes: {s['total']:,} ({s['archived']:,} archived, "
            f"{s['eligible_for_archiving']:,} eligible for archiving)"
        )
        if f["open"] is None:
            self.stdout.write("Findings: no validation has completed yet")
        else:
            runs = ", ".join(f"#{run_id}" for run_id in f["run_ids"])
            self.stdout.write(
                f"Findings: {f['open']:,} open after run #{f['run_id']} (runs {runs})"
            )
            for rule, count in f["by_rule"].items():
                self.stdout.write(f"  {rule:<32}{count:>8,}")
        self.stdout.write(
            f"New findings in the period: {f['new_in_period']:,} "
            f"({f['resolved_in_period']:,} resolved)"
        )
