"""Revert a run, or apply a reviewed dry run, from its admin page: a button, a page that
says what the new run will do, and a confirmation (a POST) that starts it. Only for
those who may start runs; the operations' own parameter checks decide what is allowed."""

from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_http_methods

from maintenance import oneline, operations
from maintenance.admin_actions import may_start, start_from_admin
from maintenance.models import MaintenanceRun
from maintenance.operations import apply_run, recorded, revert_run
from maintenance.operations.base import ParameterError

TEMPLATE = "admin/maintenance/maintenancerun/revert_confirmation.html"


@dataclass(frozen=True)
class Kind:
    slug: str  # in the URL and its name
    operation: str  # what Confirm starts
    button: str  # on the run page
    title: str  # of the confirmation page, with the run's number
    conflict_rule: str  # the findings of rows changed since
    offers_dry_run: bool


REVERT = Kind(
    slug="revert",
    operation=revert_run.RevertRun.name,
    button="Revert",
    title="Revert run #{}",
    conflict_rule=revert_run.CONFLICT,
    offers_dry_run=True,
)
APPLY = Kind(
    slug="apply",
    operation=apply_run.ApplyRun.name,
    button="Apply this plan",
    title="Apply the plan of dry run #{}",
    conflict_rule=apply_run.CONFLICT,
    offers_dry_run=False,
)
KINDS = (REVERT, APPLY)


def url_name(kind: Kind) -> str:
    return f"maintenance_maintenancerun_{kind.slug}"


def urls(modeladmin) -> list[URLPattern]:
    """The confirmation pages, for MaintenanceRunAdmin.get_urls."""

    def view_of(kind):
        def view(request, run_id):
            return confirm(modeladmin, request, run_id, kind)

        return modeladmin.admin_site.admin_view(require_http_methods(["GET", "POST"])(view))

    return [path(f"<int:run_id>/{k.slug}/", view_of(k), name=url_name(k)) for k in KINDS]


def offered(request: HttpRequest, run: MaintenanceRun) -> list[tuple[str, str]]:
    """(url, label) of the buttons the run page shows this user for this run."""
    if not may_start(request):
        return []
    return [
        (reverse(f"admin:{url_name(kind)}", args=[run.pk]), kind.button)
        for kind in KINDS
        if refusal(kind, run) is None
    ]


def refusal(kind: Kind, run: MaintenanceRun, dry_run: bool = False) -> str | None:
    """Why the operation would not start for this run (one line), or None."""
    try:
        operations.get(kind.operation).clean(params_for(run, dry_run))
    except ParameterError as error:
        return oneline.first_line(error)
    return None


def params_for(run: MaintenanceRun, dry_run: bool) -> dict:
    return {"run_id": run.pk, "dry_run": True} if dry_run else {"run_id": run.pk}


def counts(kind: Kind, run: MaintenanceRun) -> list[tuple[str, int]]:
    """What the new run will go through, as (what, rows): by rule, and archived scenes."""
    chain = recorded.chain_of(run.pk)
    if kind is APPLY:
        if run.operation == apply_run.ARCHIVE:  # its plan is the scenes it listed
            return [("scenes to archive", run.changed)] if run.changed else []
        return by_rule(apply_run.plan_of(run))
    rows = by_rule(recorded.fixes_of(chain))
    archived = recorded.batches_of(chain).aggregate(n=Sum("changed"))["n"]
    if archived:
        rows.append(("archived scenes (from its batch log)", archived))
    return rows


def by_rule(findings) -> list[tuple[str, int]]:
    grouped = findings.order_by().values_list("rule").annotate(rows=Count("id"))
    return sorted(grouped)


def run_page(run: MaintenanceRun) -> str:
    return reverse("admin:maintenance_maintenancerun_change", args=[run.pk])


def confirm(modeladmin, request: HttpRequest, run_id: int, kind: Kind) -> HttpResponse:
    """GET: what will happen. POST: start it, then show the new run."""
    if not may_start(request):
        raise PermissionDenied
    run = get_object_or_404(MaintenanceRun, pk=run_id)
    dry_run = kind.offers_dry_run and request.method == "POST" and "dry_run" in request.POST
    # Checked here, not only by start_from_admin, which records a refusal as a failed
    # run: a refused button press starts nothing and records nothing.
    why = refusal(kind, run, dry_run)
    if why is not None:
        modeladmin.message_user(request, why, messages.ERROR)
        return redirect(run_page(run))
    if request.method == "POST":
        started = start_from_admin(modeladmin, request, kind.operation, params_for(run, dry_run))
        return redirect(run_page(started or run))
    return TemplateResponse(request, TEMPLATE, page_context(modeladmin, request, run, kind))


def page_context(modeladmin, request: HttpRequest, run: MaintenanceRun, kind: Kind) -> dict:
    rows = counts(kind, run)
    return {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "title": kind.title.format(run.pk),
        "run": run,
        "kind": kind,
        "rows": rows,
        "total": sum(n for _, n in rows),
        "run_page": run_page(run),
    }
