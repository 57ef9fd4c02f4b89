"""Run history in the admin: read-only, with status, trigger, progress and duration."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from maintenance import (
    admin_links,
    admin_progress,
    admin_revert,
    admin_start,
    crontab_admin,  # noqa: F401  (registers the CrontabSchedule admin)
    schedule_admin,  # noqa: F401  (registers the PeriodicTask admin)
)
from maintenance.admin_actions import may_start, start_from_admin
from maintenance.engine import control
from maintenance.engine.enqueue import BrokerUnavailable, send
from maintenance.models import Finding, Heartbeat, MaintenanceRun, RunBatch, RunPartition
from maintenance.reporting import (
    admin_findings_path,
    progress_line,
    progress_text,
    throttle_text,
    trend_text,
)

CONTROL_LABELS = {"pause": "Pause", "resume": "Resume", "cancel": "Cancel"}


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by runs only; nobody edits or deletes it by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RunPartitionInline(admin.TabularInline):
    """A partitioned run's partitions on its page: range, state and progress."""

    model = RunPartition
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ["number", "ids", "status", "progress", "changed", "findings", "worker", "error"]
    readonly_fields = fields
    ordering = ["number"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="ids")
    def ids(self, partition):
        low = "start" if partition.lower_id is None else f"{partition.lower_id:,}"
        high = "end" if partition.upper_id is None else f"{partition.upper_id:,}"
        return f"{low} .. {high}"

    @admin.display(description="progress")
    def progress(self, partition):
        return progress_text(partition)


@admin.register(MaintenanceRun)
class MaintenanceRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "operation",
        "status_badge",
        "trigger",
        "dry_run",
        "progress",
        "changed",
        "findings",
        "duration",
        "created_at",
    ]
    list_filter = ["operation", "status", "trigger", "dry_run"]
    search_fields = ["=id", "operation", "periodic_task_name", "requested_by", "celery_task_id"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "status_badge",
        "progress",
        "throttling",
        "operation",
        "dry_run_text",
        "params",
        "trigger",
        "requested_by",
        "schedule",
        "schedule_changed_by",
        "sent_by",
        "triggered_at",
        "batch_size_text",
        "partitions",
        "processed",
        "changed",
        "findings",
        "findings_trend",
        "findings_table",
        "findings_link",
        "batches_link",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "worker",
        "attempts",
        "celery_task_id",
        "resumed_from_link",
        "resumed_by_links",
        "skipped_because_of_link",
        "skipped_runs_links",
        "checkpoint",
        "error",
    ]
    fields = readonly_fields
    inlines = [RunPartitionInline]
    actions = ["rerun", "dry_run_again", "pause_runs", "resume_runs", "cancel_runs"]

    # --- pause, resume and cancel: buttons on the run page and list actions ---

    def get_urls(self):
        control_view = self.admin_site.admin_view(require_POST(self.control_view))
        return [
            path(
                "<int:run_id>/control/<str:action>/",
                control_view,
                name="maintenance_maintenancerun_control",
            ),
            *admin_revert.urls(self),
            *admin_progress.urls(self),
            *admin_start.urls(self),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        # "Start a run" above the history, for those who may start runs.
        context = {**(extra_context or {}), "may_start_runs": may_start(request)}
        return super().changelist_view(request, extra_context=context)

    def control_view(self, request, run_id, action):
        if action not in CONTROL_LABELS:
            raise Http404(f"no action {action!r}")
        if not may_start(request):
            raise PermissionDenied
        run = get_object_or_404(MaintenanceRun, pk=run_id)
        self._control(request, run, action)
        return redirect(reverse("admin:maintenance_maintenancerun_change", args=[run.pk]))

    def _control(self, request, run, action):
        """One action on one run, and one message saying what happened."""
        try:
            if action == "resume":
                control.resume(run, send=send)
            else:
                getattr(control, action)(run)
        except control.NotAllowed as refused:
            self.message_user(request, str(refused), messages.ERROR)
        except BrokerUnavailable as error:
            self.message_user(
                request,
                f"Run #{run.pk} is queued but could not be sent ({error}); "
                "the sweeper sends it again once the broker answers.",
                messages.WARNING,
            )
        else:
            self.message_user(request, f"Run #{run.pk} is {run.status}.", messages.SUCCESS)

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None and obj.is_partitioned else []

    def change_view(self, request, object_id, form_url="", extra_context=None):
        wanted = str(object_id)
        known = wanted.isascii() and wanted.isdigit() and len(wanted) < 19
        run = MaintenanceRun.objects.filter(pk=wanted).first() if known else None
        allowed, record_actions = [], []
        if run is not None and may_start(request):
            allowed = [
                (action, label)
                for action, label in CONTROL_LABELS.items()
                if control.allows(run, action)
            ]
            record_actions = admin_revert.offered(request, run)
        context = {
            **(extra_context or {}),
            "control_actions": allowed,
            "record_actions": record_actions,
            # While it is under way the page follows it (admin_progress).
            "progress_url": (
                reverse("admin:maintenance_maintenancerun_progress", args=[run.pk])
                if run is not None and not run.is_finished
                else ""
            ),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _control_each(self, request, queryset, action):
        for run in queryset.order_by("id"):
            self._control(request, run, action)

    @admin.action(description="Pause selected runs", permissions=["start"])
    def pause_runs(self, request, queryset):
        self._control_each(request, queryset, "pause")

    @admin.action(description="Resume selected runs", permissions=["start"])
    def resume_runs(self, request, queryset):
        self._control_each(request, queryset, "resume")

    @admin.action(description="Cancel selected runs", permissions=["start"])
    def cancel_runs(self, request, queryset):
        self._control_each(request, queryset, "cancel")

    def has_start_permission(self, request):
        return may_start(request)

    def _start_again(self, request, queryset, dry_run):
        for run in queryset.order_by("id"):
            params = {
                **run.params,
                "batch_size": run.batch_size,
                "partitions": run.partitions,
                "dry_run": dry_run,
            }
            start_from_admin(self, request, run.operation, params)

    @admin.action(description="Re-run selected runs", permissions=["start"])
    def rerun(self, request, queryset):
        self._start_again(request, queryset, dry_run=False)

    @admin.action(description="Dry-run selected runs again", permissions=["start"])
    def dry_run_again(self, request, queryset):
        self._start_again(request, queryset, dry_run=True)

    @admin.display(description="status", ordering="status")
    def status_badge(self, run):
        colours = {
            "succeeded": "#2e7d32",
            "failed": "#c62828",
            "running": "#1565c0",
            "pausing": "#1565c0",
            "cancelling": "#1565c0",
            "paused": "#ef6c00",
            "interrupted": "#ef6c00",
            "cancelled": "#9e9e9e",
            "skipped": "#9e9e9e",
            "queued": "#6d4c41",
        }
        if control.is_stale(run):
            return format_html(
                '<strong style="color:#c62828">{} (stale: no heartbeat since {})</strong>',
                run.status,
                run.heartbeat_at,
            )
        return format_html(
            '<strong style="color:{}">{}</strong>', colours.get(run.status, "#000"), run.status
        )

    @admin.display(description="progress")
    def progress(self, run):
        return progress_line(run)

    @admin.display(description="throttled")
    def throttling(self, run):
        return throttle_text(run) or "never"

    @admin.display(description="batch size")
    def batch_size_text(self, run):
        if run.batch_size is None:
            return "adaptive (towards the target batch time)"
        return f"{run.batch_size:,} rows (pinned)"

    @admin.display(description="dry run")
    def dry_run_text(self, run):
        return "yes: it wrote no game data" if run.dry_run else "no"

    @admin.display(description="schedule")
    def schedule(self, run):
        return admin_links.schedule_link(run)

    @admin.display(description="findings by rule")
    def findings_table(self, run):
        return admin_links.findings_by_rule(run)

    @admin.display(description="batches")
    def batches_link(self, run):
        return admin_links.batches_link(run)

    @admin.display(description="resumed from")
    def resumed_from_link(self, run):
        return admin_links.run_link(run.resumed_from)

    @admin.display(description="resumed by")
    def resumed_by_links(self, run):
        return admin_links.run_links(run.resumed_by.order_by("pk"))

    @admin.display(description="skipped because of")
    def skipped_because_of_link(self, run):
        return admin_links.run_link(run.skipped_because_of)

    @admin.display(description="runs skipped because of this one")
    def skipped_runs_links(self, run):
        return admin_links.run_links(run.skipped_runs.order_by("pk")[:50])

    @admin.display(description="findings over time")
    def findings_trend(self, run):
        return trend_text(run) or "not counted (the run checks no rules, or did not finish)"

    @admin.display(description="all findings")
    def findings_link(self, run):
        if not run.findings:
            return "none"
        return format_html(
            '<a href="{}">{} findings of this run, filterable by rule and fixed</a>',
            admin_findings_path(run),
            run.findings,
        )

    @admin.display(description="duration")
    def duration(self, run):
        return "" if run.duration_s is None else f"{run.duration_s:.1f}s"


@admin.register(RunBatch)
class RunBatchAdmin(ReadOnlyAdmin):
    list_display = [
        "batch",
        "run_link",
        "partition",
        "size",
        "processed",
        "changed",
        "findings",
        "duration",
        "committed_at",
    ]
    list_filter = ["run__operation"]
    list_select_related = ["run"]
    raw_id_fields = ["run"]
    ordering = ["-committed_at", "-id"]  # the latest batch on the first page
    readonly_fields = [
        "run_link",
        "partition",
        "number",
        "position",
        "processed",
        "changed",
        "findings",
        "changed_ids",
        "written",
        "size",
        "duration",
        "committed_at",
    ]
    fields = readonly_fields

    @admin.display(description="batch", ordering="number")
    def batch(self, batch):
        return f"batch {batch.number:,}"

    @admin.display(description="run", ordering="run")
    def run_link(self, batch):
        return admin_links.run_link(batch.run, short=True)

    @admin.display(description="duration", ordering="seconds")
    def duration(self, batch):
        return f"{batch.seconds * 1000:,.0f} ms"


@admin.register(Finding)
class FindingAdmin(ReadOnlyAdmin):
    # The short columns first: at 1400 px the message wraps, nothing is off-screen.
    list_display = [
        "row",
        "rule",
        "fixed",
        "dry_run",
        "change",
        "message",
        "run_link",
        "first_seen_at",
    ]
    list_filter = ["rule", "fixed", "run__dry_run", "run__operation"]
    list_select_related = ["run"]
    search_fields = ["=object_id", "message"]
    raw_id_fields = ["run"]
    readonly_fields = [
        "run_link",
        "dry_run",
        "rule",
        "row",
        "message",
        "fixed",
        "change",
        "before",
        "after",
        "also_written",
        "fingerprint",
        "first_seen_at",
        "created_at",
    ]
    fields = readonly_fields

    @admin.display(description="row", ordering="object_id")
    def row(self, finding):
        return admin_links.object_link(finding.model, finding.object_id)

    @admin.display(description="before → after")
    def change(self, finding):
        return admin_links.change_text(finding)

    @admin.display(description="dry run", boolean=True, ordering="run__dry_run")
    def dry_run(self, finding):
        return finding.run.dry_run

    @admin.display(description="run", ordering="run")
    def run_link(self, finding):
        return admin_links.run_link(finding.run, short=True)


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "seen_at", "hostname", "periodic_task_name"]
