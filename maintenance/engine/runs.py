"""Creating run records: validated parameters in, a queued MaintenanceRun out.

Input from outside (task kwargs, schedule text, admin JSON) is screened here before any
operation sees it: nesting, size, NUL characters and huge numbers are refused with one
line, so no later repr(), json encoder or database ever meets them."""

import math

from django.db import transaction
from django.utils import timezone

from maintenance import operations
from maintenance.engine import partitions
from maintenance.engine.iteration import RunContext
from maintenance.models import MaintenanceRun
from maintenance.operations.base import ParameterError

ERROR_LIMIT = 2000  # characters of a run's error text
MAX_DEPTH = 16  # parameters are flat; a value nested deeper than this is not one
MAX_STRING = 10_000  # characters in one string (key or value)
MAX_ITEMS = 10_000  # values in all the containers together
MAX_INT_BITS = 63  # what a bigint column can hold
# A rejected run keeps a bounded copy of what was given.
STORED_DEPTH = 6
STORED_STRING = 500
STORED_ITEMS = 50


def cut_error(text: object) -> str:
    """An error as one line of at most ERROR_LIMIT characters. The runner's failure path
    and every other writer of MaintenanceRun.error from input should call this."""
    try:
        line = str(text)
    except Exception as error:  # str() of hostile input: RecursionError, ValueError
        line = f"unprintable error ({type(error).__name__})"
    line = " ".join(line.replace("\x00", "\\u0000").split())
    if len(line) > ERROR_LIMIT:
        line = line[: ERROR_LIMIT - 1] + "…"
    return line


def screen(value: object) -> None:
    """Raise ParameterError if `value` is not plain, bounded JSON. Iterative, so
    thousands of nesting levels cost no recursion."""
    stack = [(value, 1)]
    items = 0
    while stack:
        current, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            raise ParameterError(f"parameters hold more than {MAX_ITEMS} values")
        if depth > MAX_DEPTH:
            raise ParameterError(f"parameters are nested more than {MAX_DEPTH} levels deep")
        if isinstance(current, str):
            _screen_text(current)
        elif isinstance(current, bool) or current is None:
            continue
        elif isinstance(current, int):
            if current.bit_length() > MAX_INT_BITS:
                raise ParameterError("a number in the parameters is out of range")
        elif isinstance(current, float):
            if not math.isfinite(current):
                raise ParameterError("a number in the parameters is not finite")
        elif isinstance(current, dict):
            for key, item in current.items():
                if not isinstance(key, str):
                    raise ParameterError("parameter names must be strings")
                _screen_text(key)
                stack.append((item, depth + 1))
        elif isinstance(current, list | tuple):
            stack.extend((item, depth + 1) for item in current)
        else:
            raise ParameterError(f"a parameter value of type {type(current).__name__}")


def _screen_text(text: str) -> None:
    if "\x00" in text:
        raise ParameterError("parameters contain a NUL character")
    if len(text) > MAX_STRING:
        raise ParameterError(f"a text in the parameters is longer than {MAX_STRING} characters")


def create_run(
    operation_name,
    raw_params,
    *,
    trigger,
    requested_by="",
    periodic_task_name="",
    celery_task_id="",
    schedule_changed_by="",
    sent_by="",
    triggered_at=None,
):
    """Validate and record a run. Raises UnknownOperation or ParameterError, having
    written nothing."""
    operation = operations.get(operation_name)
    screen(raw_params)
    with transaction.atomic():  # a partitioned run appears with all its partitions
        # Validated in the transaction that records it: a check that reads other runs
        # (a revert's "not reverted yet") still holds when this one appears.
        params, dry_run, batch_size, partitions = operation.clean(raw_params)
        run = MaintenanceRun.objects.create(
            operation=operation.name,
            trigger=trigger,
            requested_by=requested_by,
            periodic_task_name=periodic_task_name,
            schedule_changed_by=schedule_changed_by,
            celery_task_id=celery_task_id,
            sent_by=sent_by,
            triggered_at=triggered_at,
            params=params,
            dry_run=dry_run,
            batch_size=batch_size,
            partitions=partitions,
        )
        if run.is_partitioned:
            _split(run, operation)
    return run


def _split(run: MaintenanceRun, operation) -> None:
    """Fix the run's context (e.g. its cutoff) and its partitions' ranges now, at its
    start, and count its rows once for progress."""
    prepared = operation.prepare(run.params, timezone.now())
    context = RunContext(run.pk, run.params, prepared, run.dry_run, run.batch_size)
    partitions.create(run, operation, context)
    run.checkpoint = {"context": prepared, "position": None, "done": False}
    run.total = operation.count_remaining(context, None)
    MaintenanceRun.objects.filter(pk=run.pk).update(checkpoint=run.checkpoint, total=run.total)


def record_rejected(operation_name, raw_params, error, **origin):
    """A trigger whose parameters are unusable becomes a failed run that says why:
    recorded, then failed at once (the one way a run's status changes)."""
    run = MaintenanceRun.objects.create(
        operation=str(operation_name)[:64], params=_json_safe(raw_params), **origin
    )
    MaintenanceRun.objects.filter(pk=run.pk).fail(
        cut_error(f"invalid parameters: {cut_error(error)}")
    )
    run.refresh_from_db()
    return run


def _json_safe(value, depth=0):
    """Rejected input, made storable as it was given (PostgreSQL's JSON has no NUL),
    cut to a bounded size and depth so that any input can be stored."""
    if isinstance(value, str):
        if len(value) > STORED_STRING:
            value = value[:STORED_STRING] + f"… ({len(value)} characters)"
        return value.replace("\x00", "\\u0000")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return (
            value
            if value.bit_length() <= MAX_INT_BITS
            else f"<integer of {value.bit_length()} bits>"
        )
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # JSON has no Infinity or NaN
    if isinstance(value, dict | list | tuple) and depth >= STORED_DEPTH:
        return "<nested too deeply>"
    if isinstance(value, dict):
        pairs = list(value.items())
        safe = {
            _json_safe(k if isinstance(k, str) else _short_repr(k), depth + 1): _json_safe(
                v, depth + 1
            )
            for k, v in pairs[:STORED_ITEMS]
        }
        if len(pairs) > STORED_ITEMS:
            safe["…"] = f"{len(pairs) - STORED_ITEMS} more"
        return safe
    if isinstance(value, list | tuple):
        safe = [_json_safe(v, depth + 1) for v in value[:STORED_ITEMS]]
        if len(value) > STORED_ITEMS:
            safe.append(f"… {len(value) - STORED_ITEMS} more")
        return safe
    return _json_safe(_short_repr(value), depth)


def _short_repr(value):
    return f"<{type(value).__name__}>"


__all__ = ["create_run", "record_rejected", "cut_error", "screen", "ParameterError"]
