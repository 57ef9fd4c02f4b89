"""manage.py run_maintenance [OPERATION [flags]]: list, enqueue or run inline."""

import json
import os
import sys

from django.db import DatabaseError

from maintenance import cli, operations
from maintenance.engine.enqueue import BrokerUnavailable, start
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import MaintenanceRun
from maintenance.operations.base import COMMON_PARAMETERS, ParameterError
from maintenance.reporting import (
    admin_findings_path,
    findings_by_rule,
    outcome_line,
    run_summary,
)


class Command(cli.OneLineErrorsCommand):
    help = (
        "Run a maintenance operation. Without one, list the operations. By default the run "
        "is enqueued for a worker; --inline runs it here."
    )

    def add_arguments(self, parser):
        subparsers = parser.add_subparsers(
            dest="operation", metavar="OPERATION", parser_class=cli.OneLineErrorParser
        )
        for operation in operations.all_operations():
            sub = subparsers.add_parser(
                operation.name, help=operation.description, description=operation.description
            )
            for parameter in operation.parameters:
                cli.add_parameter_flag(sub, parameter)
            cli.add_run_options(sub)

    def handle(self, *args, **options):
        if not options.get("operation"):
            self._list()
            return
        if options["timeout"] is not None and not options["wait"]:
            raise cli.usage_error("--timeout needs --wait")
        try:
            run = self._run(options)
        except (BrokerUnavailable, DatabaseError) as error:
            raise cli.error(cli.first_line(error)) from None
        except cli.WaitTimedOut as timed_out:
            if options["json"]:
                self.stdout.write(json.dumps(run_summary(timed_out.run)))
            raise cli.error(f"{timed_out}; it goes on on the worker") from None
        self._finish(run, options)

    def _list(self):
        self.stdout.write(self.style.NOTICE("Operations (run_maintenance OPERATION --help):"))
        for operation in operations.all_operations():
            self.stdout.write(f"  {self.style.SUCCESS(operation.name)}  {operation.description}")
            for parameter in operation.parameters:
                self.stdout.write(f"      {parameter.flag:<22}{parameter.help}")

    @staticmethod
    def _params(operation, options):
        """The raw parameters; a file path is made absolute here, where it was typed."""
        raw = {}
        for parameter in (*operation.parameters, *COMMON_PARAMETERS):
            value = options.get(parameter.name)
            if value is None:
                continue
            if parameter.is_path and isinstance(value, str) and value.strip():
                value = os.path.abspath(value)
            raw[parameter.name] = value
        return raw

    def _run(self, options):
        operation = operations.get(options["operation"])
        raw = self._params(operation, options)
        origin = {"trigger": MaintenanceRun.Trigger.CLI, "requested_by": cli.os_user()}
        inline = options["inline"]
        try:
            operation.clean(raw)
        except ParameterError as error:
            raise cli.usage_error(f"{operation.name}: {error}") from None
        ask = inline and self._should_ask(raw, options)
        if ask and not (cli.is_terminal(sys.stdin) and cli.is_terminal(sys.stdout)):
            # Nobody to ask: a real fix needs an explicit yes. Nothing is recorded.
            raise cli.usage_error(
                "an inline --fix without a terminal needs --no-input (or --json) to apply, "
                "or --dry-run to preview"
            )
        try:
            run = (
                create_run(operation.name, raw, **origin)
                if inline
                else start(operation.name, raw, **origin)
            )
        except ParameterError as error:  # e.g. a chronicle deleted since the check
            raise cli.usage_error(f"{operation.name}: {error}") from None
        if inline:  # from here on, however this process stops, the run ends
            self.own_runs.append(run.pk)

        progress = cli.Progress(self.stdout, options["verbosity"], enabled=not options["json"])
        try:
            if ask:
                return self._preview_then_apply(run, raw, origin, progress, options)
            if inline:
                return cli.run_here(run, progress)
            if not options["wait"]:
                return run
            if not options["json"]:
                self.stdout.write(f"Enqueued run #{run.pk} (task {run.celery_task_id}); waiting.")
            timeout = options["timeout"] or cli.WAIT_TIMEOUT
            return cli.follow(run, progress, self.stdout, timeout=timeout)
        finally:
            progress.close()

    @staticmethod
    def _should_ask(raw, options):
        """An inline real --fix asks first, unless --no-input or --json says not to."""
        return (
            bool(raw.get("fix") and not raw.get("dry_run") and options["interactive"])
            and not options["json"]
        )

    def _preview_then_apply(self, run, raw, origin, progress, options):
        # The recorded run becomes the preview (a dry run); the fix is a run of its own.
        MaintenanceRun.objects.filter(pk=run.pk).update(dry_run=True)
        run.refresh_from_db()
        preview = execute(run, on_batch=progress.batch)
        progress.close()
        if preview.status != MaintenanceRun.Status.SUCCEEDED or not preview.changed:
            return preview
        self._report(preview, options)
        if not self._confirm(f"Apply {preview.changed:,} fixes? [y/N] "):
            self.stdout.write(self.style.NOTICE("Nothing changed."))
            return preview
        fix_run = create_run(run.operation, raw, **origin)
        self.own_runs.append(fix_run.pk)
        return cli.run_here(fix_run, progress)

    @staticmethod
    def _confirm(question):
        """Yes only for y or yes; end of input (Ctrl-D) is no."""
        try:
            answer = input(question)
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    def _report(self, run, options):
        style = {
            MaintenanceRun.Status.SUCCEEDED: self.style.SUCCESS,
            MaintenanceRun.Status.SKIPPED: self.style.WARNING,
        }.get(run.status, self.style.ERROR)
        self.stdout.write(style(outcome_line(run)))
        if not run.findings:
            return
        sample = 20 if options["verbosity"] >= 2 else 5
        self.stdout.write(self.style.WARNING("Findings by rule:"))
        for rule, total, fixed, examples in findings_by_rule(run, sample):
            fixed_text = f" ({fixed:,} fixed)" if fixed else ""
            self.stdout.write(f"  {rule:<32}{total:>8,}{fixed_text}")
            for finding in examples:
                label = finding.model.rsplit(".", 1)[-1].lower()
                self.stdout.write(f"      {label} {finding.object_id}: {finding.message}")
            if total > len(examples):
                self.stdout.write(f"      ... and {total - len(examples):,} more")
        self.stdout.write(self.style.NOTICE(f"All findings: {admin_findings_path(run)}"))

    def _finish(self, run, options):
        stopped = run.status == MaintenanceRun.Status.PAUSED  # by an operator, mid-wait
        if not (run.is_finished or stopped):  # enqueued, not waited for
            if options["json"]:
                keys = {"run_id": run.pk, "task_id": run.celery_task_id}
                keys |= {"operation": run.operation, "status": run.status}
                self.stdout.write(json.dumps(keys))
            else:
                self.stdout.write(
                    self.style.SUCCESS(f"Enqueued {run.operation} as run #{run.pk}")
                    + f" (task {run.celery_task_id})."
                )
            return
        if options["json"]:
            self.stdout.write(json.dumps(run_summary(run)))
        else:
            self._report(run, options)
        cli.raise_for_outcome(run, options["fail_on_findings"])
