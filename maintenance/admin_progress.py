"""The run page's live part: a small JSON view of a run's progress that the page polls
while the run is under way (a few lines of script in its template)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import URLPattern, path

from maintenance.engine.control import is_stale
from maintenance.models import MaintenanceRun
from maintenance.reporting import progress_line, run_summary, throttle_text

# How often the page asks, in milliseconds: often enough to watch, cheap for the database.
POLL_MS = 2000


def progress(request: HttpRequest, run_id: int) -> JsonResponse:
    if not request.user.has_perm("maintenance.view_maintenancerun"):
        raise PermissionDenied
    run = MaintenanceRun.objects.filter(pk=run_id).first()
    if run is None:
        raise Http404(f"no run #{run_id}")
    summary = run_summary(run)
    percent = None
    if run.total:
        percent = min(100, 100 * run.processed // run.total)
    elif run.status == MaintenanceRun.Status.SUCCEEDED:
        percent = 100
    return JsonResponse(
        {
            **summary,
            "percent": percent,
            "progress_text": progress_line(run),
            "throttle_text": throttle_text(run) or "never",
            "stale": is_stale(run),
            "finished": run.is_finished,
            "poll_ms": POLL_MS,
        }
    )


def urls(modeladmin) -> list[URLPattern]:
    view = modeladmin.admin_site.admin_view(progress)
    return [path("<int:run_id>/progress.json", view, name="maintenance_maintenancerun_progress")]
