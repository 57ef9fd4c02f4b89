"""Links between the admin's pages: a run's batches, findings, schedule and related runs;
a finding's object and what its fix changed. Every link is built with reverse() and
format_html(), and a target that no longer exists is plain text, never a broken page."""

from __future__ import annotations

from urllib.parse import urlencode

from django.apps import apps
from django.db.models import Count, Q
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django_celery_beat.models import PeriodicTask

from maintenance.models import Finding, MaintenanceRun


def changelist(model_label: str, **filters) -> str:
    app_label, model = model_label.lower().split(".")
    url = reverse(f"admin:{app_label}_{model}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def run_link(run: MaintenanceRun | None, short: bool = False) -> SafeString | str:
    """'#12 archive_old_scenes (succeeded)', or '#12' (the rest as its title) in lists."""
    if run is None:
        return "-"
    url = reverse("admin:maintenance_maintenancerun_change", args=[run.pk])
    label = f"{run.operation} ({run.status}{', dry run' if run.dry_run else ''})"
    if short:
        return format_html('<a href="{}" title="{}">#{}</a>', url, label, run.pk)
    return format_html('<a href="{}">#{} {}</a>', url, run.pk, label)


def run_links(runs) -> SafeString | str:
    runs = list(runs)
    if not runs:
        return "-"
    return format_html_join(", ", "{}", ((run_link(run),) for run in runs))


def object_link(model_label: str, object_id: int) -> SafeString | str:
    """'character 12' linking to that row's admin page (text when it has none)."""
    try:
        model = apps.get_model(model_label)
    except (LookupError, ValueError):
        return f"{model_label} {object_id}"
    name = model._meta.verbose_name
    try:
        url = reverse(
            f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[object_id]
        )
    except NoReverseMatch:
        return f"{name} {object_id}"
    return format_html('<a href="{}">{} {}</a>', url, name, object_id)


def batches_link(run: MaintenanceRun) -> SafeString | str:
    if not run.batches:
        return "none"
    url = changelist("maintenance.RunBatch", run__id__exact=run.pk)
    return format_html('<a href="{}">{} batches, newest first</a>', url, f"{run.batches:,}")


def findings_by_rule(run: MaintenanceRun) -> SafeString | str:
    """A small table: each rule with its findings and how many were fixed, each count a
    link to those findings."""
    groups = (
        Finding.objects.filter(run=run)
        .values("rule")
        .annotate(total=Count("id"), fixed=Count("id", filter=Q(fixed=True)))
        .order_by("-total", "rule")
    )
    rows = [
        (
            changelist("maintenance.Finding", run__id__exact=run.pk, rule=group["rule"]),
            group["rule"],
            f"{group['total']:,}",
            f"{group['fixed']:,} fixed" if group["fixed"] else "",
        )
        for group in groups
    ]
    if not rows:
        return "none"
    body = format_html_join(
        "",
        '<tr><td><a href="{}">{}</a></td><td style="text-align:right">{}</td><td>{}</td></tr>',
        rows,
    )
    return format_html('<table class="findings-by-rule">{}</table>', body)


def schedule_link(run: MaintenanceRun) -> SafeString | str:
    if not run.periodic_task_name:
        return "-"
    task = PeriodicTask.objects.filter(name=run.periodic_task_name).first()
    if task is None:
        return f"{run.periodic_task_name} (no longer exists)"
    url = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
    return format_html('<a href="{}">{}</a>', url, task.name)


def change_text(finding: Finding) -> str:
    """'xp 5 -> 9' for a fix (or a planned one); what it found for the others."""
    after = finding.after or {}
    before = finding.before or {}
    if not after:
        return ", ".join(f"{field} {_value(value)}" for field, value in before.items())
    return ", ".join(
        f"{field} {_value(before.get(field))} → {_value(value)}" for field, value in after.items()
    )


def _value(value) -> str:
    return "empty" if value is None else str(value)
