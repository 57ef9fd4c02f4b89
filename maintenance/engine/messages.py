"""One run per task message. A message that carries parameters (beat's, or a task sent
from code) becomes a run when a worker first takes it; the same message delivered again,
or sent twice under one task id (two beats, a beat that lost its state), finds that run
instead of making another, even when two workers take the copies at the same moment."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.db import IntegrityError, transaction

from maintenance.models import MaintenanceRun, TaskMessage


class _MadeElsewhere(Exception):
    """Another delivery of the message linked its run first: undo ours."""


def run_of(task_id: str) -> MaintenanceRun | None:
    message = TaskMessage.objects.filter(task_id=task_id).select_related("run").first()
    return message.run if message is not None else None


def once_per_message(
    task_id: str,
    make: Callable[[], MaintenanceRun],
    *,
    operation: str,
    periodic_task_name: str = "",
    sent_by: str = "",
    due_at: datetime | None = None,
) -> MaintenanceRun:
    """The run of message `task_id`: the one already made for it, or `make()`'s, linked
    to the message in the transaction that records it."""
    if not task_id:
        return make()
    try:
        with transaction.atomic():
            message, _ = TaskMessage.objects.get_or_create(
                task_id=task_id,
                defaults={
                    "operation": operation[:64],
                    "periodic_task_name": periodic_task_name[:200],
                    "sent_by": sent_by[:200],
                    "due_at": due_at,
                },
            )
            if message.run_id is not None:
                return message.run
            run = make()
            # Conditional: of two deliveries racing here, one links its run.
            if not TaskMessage.objects.filter(pk=message.pk, run__isnull=True).update(run=run):
                raise _MadeElsewhere
            return run
    except (_MadeElsewhere, IntegrityError):
        existing = run_of(task_id)
        if existing is None:
            raise
        return existing
