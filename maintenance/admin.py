"""Run history in the admin: read-only, with status, trigger, progress and duration."""

from django.contrib import admin
from django.utils.html import format_html

from maintenance import schedule_admin  # noqa: F401  (registers the PeriodicTask admin)
from maintenance.admin_actions import may_start, start_from_admin
from maintenance.models import Finding, Heartbeat, MaintenanceRun, RunBatch
from maintenance.reporting import admin_findings_path


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by runs only; nobody edits or deletes it by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
        "operation",
        "status",
        "trigger",
        "periodic_task_name",
        "schedule_changed_by",
        "requested_by",
        "params",
        "dry_run",
        "batch_size",
        "celery_task_id",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "attempts",
        "progress",
        "processed",
        "changed",
        "findings",
        "findings_link",
        "batches",
        "checkpoint",
        "resumed_from",
        "skipped_because_of",
        "error",
    ]
    fields = readonly_fields
    actions = ["rerun", "dry_run_again"]

    def has_start_permission(self, request):
        return may_start(request)

    def _start_again(self, request, queryset, dry_run):
        for run in queryset.order_by("id"):
            params = {**run.params, "batch_size": run.batch_size, "dry_run": dry_run}
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
            "skipped": "#9e9e9e",
            "queued": "#6d4c41",
        }
        return format_html(
            '<strong style="color:{}">{}</strong>', colours.get(run.status, "#000"), run.status
        )

    @admin.display(description="progress")
    def progress(self, run):
        if run.total:
            share = min(100, 100 * run.processed // run.total)
            return f"{run.processed:,} / {run.total:,} ({share}%)"
        return f"{run.processed:,}"

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
    list_display = ["run", "number", "processed", "changed", "findings", "seconds", "committed_at"]
    list_filter = ["run__operation"]
    raw_id_fields = ["run"]
    readonly_fields = [
        "run",
        "number",
        "position",
        "processed",
        "changed",
        "findings",
        "changed_ids",
        "seconds",
        "committed_at",
    ]


@admin.register(Finding)
class FindingAdmin(ReadOnlyAdmin):
    list_display = ["run", "rule", "model", "object_id", "message", "fixed"]
    list_filter = ["rule", "fixed", "run__operation"]
    search_fields = ["=object_id", "message"]
    raw_id_fields = ["run"]
    readonly_fields = ["run", "rule", "model", "object_id", "message", "fixed", "before", "after"]


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "seen_at", "hostname", "periodic_task_name"]
