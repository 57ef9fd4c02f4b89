"""Starting runs from the admin: permission checks and one message per run."""

from django.contrib import messages

from maintenance.engine.enqueue import BrokerUnavailable, start
from maintenance.engine.runs import cut_error, record_rejected, screen
from maintenance.models import MaintenanceRun
from maintenance.operations.base import ParameterError

START_PERMISSION = "maintenance.start_maintenancerun"


def may_start(request):
    return request.user.is_active and request.user.has_perm(START_PERMISSION)


def start_from_admin(modeladmin, request, operation_name, raw_params, periodic_task_name=""):
    """Enqueue a run recorded as trigger `admin`; bad parameters become a failed run
    that says why. Tells the user what happened either way."""
    origin = {
        "trigger": MaintenanceRun.Trigger.ADMIN,
        "requested_by": request.user.get_username(),
        "periodic_task_name": periodic_task_name,
    }
    try:
        screen(raw_params)  # before any operation or repr() meets hostile input
        run = start(operation_name, raw_params, **origin)
    except ParameterError as error:
        run = record_rejected(operation_name, raw_params, error, **origin)
        modeladmin.message_user(
            request, f"Run #{run.pk} of {operation_name} failed: {run.error}", messages.ERROR
        )
        return None
    except BrokerUnavailable as error:
        modeladmin.message_user(
            request, f"{operation_name} not started: {cut_error(error)}", messages.ERROR
        )
        return None
    modeladmin.message_user(
        request,
        f"Started {operation_name}{' (dry run)' if run.dry_run else ''} as run #{run.pk}.",
        messages.SUCCESS,
    )
    return run
