"""manage.py run_maintenance [OPERATION [flags]]: list, enqueue or run inline."""

import json
import sys

from django.core.management.base import CommandError
from django.db import DatabaseError

from maintenance import cli, operations
from maintenance.enqueue import BrokerUnavailable, start
from maintenance.models import MaintenanceRun
from maintenance.operations.base import ParameterError
from maintenance.reporting import (
    admin_findings_path,
    findings_by_rule,
    outcome_line,
    run_summary,
)
from maintenance.runner import execute
from maintenance.runs import create_run


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
        try:
            run = self._run(options)
        except (BrokerUnavailable, DatabaseError) as error:
            raise CommandError(
                str(error).strip().splitlines()[0], returncode=cli.EXIT_FAILED
            ) from None
        self._finish(run, options)

    def _list(self):
        self.stdout.write(self.style.NOTICE("Operations (run_maintenance OPERATION --help):"))
        for operation in operations.all_operations():
            self.stdout.write(f"  {self.style.SUCCESS(operation.name)}  {operation.description}")
            for parameter in operation.parameters:
                self.stdout.write(f"      {parameter.flag:<22}{parameter.help}")

    def _params(self, operation, options):
        names = [p.name for p in operation.parameters] + ["dry_run", "batch_size"]
        return {name: options[name] for name in names if options.get(name) is not None}

    def _run(self, options):
        operation = operations.get(options["operation"])
        raw = self._params(operation, options)
        origin = {"trigger": MaintenanceRun.Trigger.CLI, "requested_by": cli.os_user()}
        inline = options["inline"]
        try:
            run = (
                create_run(operation.name, raw, **origin)
                if inline
                else start(operation.name, raw, **origin)
            )
        except ParameterError as error:
            raise CommandError(f"{operation.name}: {error}", returncode=cli.EXIT_USAGE) from None

        progress = cli.Progress(self.stdout, options["verbosity"], enabled=not options["json"])
        try:
            if inline and self._should_ask(run, options):
                return self._preview_then_apply(run, raw, origin, progress, options)
            if inline:
                return execute(run, on_batch=progress.batch)
            if not options["wait"]:
                return run
            if not options["json"]:
                self.stdout.write(f"Enqueued run #{run.pk} (task {run.celery_task_id}); waiting.")
            return cli.follow(run, progress, self.stdout)
        finally:
            progress.close()

    @staticmethod
    def _should_ask(run, options):
        """An inline --fix on a terminal asks first; --no-input or no terminal never."""
        return (
            run.params.get("fix")
            and not run.dry_run
            and options["interactive"]
            and not options["json"]
            and sys.stdin.isatty()
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
        answer = input(f"Apply {preview.changed:,} fixes? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            self.stdout.write(self.style.NOTICE("Nothing changed."))
            return preview
        fix_run = create_run(run.operation, raw, **origin)
        return execute(fix_run, on_batch=progress.batch)

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
        if not run.is_finished:  # enqueued, not waited for
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
