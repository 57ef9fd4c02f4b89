"""What an operator can do to a run: pause, resume and cancel. The CLI
(`maintenance_run`) and the admin (buttons and list actions) both call these."""

from __future__ import annotations

from collections.abc import Callable

from maintenance.engine import partitions
from maintenance.engine.leases import is_dead
from maintenance.engine.states import ACTIVE, TRANSITIONS, Status
from maintenance.models import MaintenanceRun


class UnknownRun(LookupError):
    pass


class NotAllowed(ValueError):
    """The run's status does not allow the action; the message says its status."""


def find(run_id) -> MaintenanceRun:
    text = str(run_id).strip(" ")
    # ASCII digits only: int() would also take "١٢", "1_0" or "+1".
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise UnknownRun(f"not a run id: {run_id!r}")
    pk = int(text)
    run = MaintenanceRun.objects.filter(pk=pk).first() if 0 < pk < 2**63 else None
    if run is None:
        raise UnknownRun(f"no run #{pk}")
    return run


def _act(run: MaintenanceRun, action: str) -> MaintenanceRun:
    moved = getattr(MaintenanceRun.objects.filter(pk=run.pk), action)()
    run.refresh_from_db()
    if not moved:
        allowed = ", ".join(TRANSITIONS[action])
        raise NotAllowed(f"run #{run.pk} is {run.status}: cannot {action} it (only {allowed})")
    return run


def pause(run: MaintenanceRun) -> MaintenanceRun:
    """Queued or interrupted: paused at once. Running: pausing, then paused at the next
    batch boundary. A partitioned run: every partition alike."""
    return _with_partitions(_act(run, "pause"), "pause")


def cancel(run: MaintenanceRun) -> MaintenanceRun:
    """Not running: cancelled at once. Running or pausing: cancelling, then cancelled at
    the next batch boundary. Data stays as of the last committed batch."""
    return _with_partitions(_act(run, "cancel"), "cancel")


def _with_partitions(run: MaintenanceRun, action: str) -> MaintenanceRun:
    if run.is_partitioned:
        getattr(partitions.of(run), action)()
        run = partitions.settle(run.pk)
    return run


def resume(run: MaintenanceRun, send: Callable[[MaintenanceRun], None] | None) -> MaintenanceRun:
    """Paused or interrupted: queued again, the same run from its checkpoint. `send` puts
    it on the broker (it raises when the broker is down, and the run stays queued for the
    sweeper to send); None leaves it for the caller to run inline. A partitioned run
    that failed is resumed too: its failed partitions alone run again."""
    run = _resume_partitions(run) if run.is_partitioned else _act(run, "resume")
    if send is not None:
        send(run)
        run.refresh_from_db()
    return run


def _resume_partitions(run: MaintenanceRun) -> MaintenanceRun:
    resumable = (Status.QUEUED, Status.PAUSED, Status.INTERRUPTED, Status.FAILED)
    if not partitions.of(run).filter(status__in=resumable).exists():
        raise NotAllowed(f"run #{run.pk} is {run.status}: none of its partitions can resume")
    runs = MaintenanceRun.objects.filter(pk=run.pk)
    if not (runs.resume() or runs.filter(status=Status.FAILED).retry()):
        run.refresh_from_db()
        allowed = ", ".join((*TRANSITIONS["resume"], *TRANSITIONS["retry"]))
        raise NotAllowed(f"run #{run.pk} is {run.status}: cannot resume it (only {allowed})")
    partitions.of(run).resume()
    partitions.of(run).retry()
    run.refresh_from_db()
    return run


def allows(run: MaintenanceRun, action: str) -> bool:
    """Whether `action` can move the run now (for showing only the buttons that work)."""
    if action == "resume" and run.is_partitioned and run.status == Status.FAILED:
        return True
    return run.status in TRANSITIONS[action]


def is_stale(run: MaintenanceRun) -> bool:
    """An active run whose heartbeat is older than its lease: its runner is gone."""
    return run.status in ACTIVE and is_dead(run)
