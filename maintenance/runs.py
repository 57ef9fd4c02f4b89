"""Creating run records: validated parameters in, a queued MaintenanceRun out."""

import math

from maintenance import operations
from maintenance.models import MaintenanceRun
from maintenance.operations.base import ParameterError


def create_run(
    operation_name,
    raw_params,
    *,
    trigger,
    requested_by="",
    periodic_task_name="",
    celery_task_id="",
):
    """Validate and record a run. Raises UnknownOperation or ParameterError, having
    written nothing."""
    operation = operations.get(operation_name)
    params, dry_run, batch_size = operation.clean(raw_params)
    return MaintenanceRun.objects.create(
        operation=operation.name,
        trigger=trigger,
        requested_by=requested_by,
        periodic_task_name=periodic_task_name,
        celery_task_id=celery_task_id,
        params=params,
        dry_run=dry_run,
        batch_size=batch_size,
    )


def record_rejected(operation_name, raw_params, error, **origin):
    """A trigger whose parameters are unusable becomes a failed run that says why."""
    return MaintenanceRun.objects.create(
        operation=operation_name,
        status=MaintenanceRun.Status.FAILED,
        params=_json_safe(raw_params),
        error=f"invalid parameters: {error}",
        **origin,
    )


def _json_safe(value):
    """Rejected input, made storable as it was given (PostgreSQL's JSON has no NUL)."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no Infinity or NaN
    if value is None or isinstance(value, bool | int | float):
        return value
    return repr(value)


__all__ = ["create_run", "record_rejected", "ParameterError"]
