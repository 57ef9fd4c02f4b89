"""Start a run from the admin: a page listing the operations, then a form generated from
the chosen operation's parameter declarations, a confirmation page before a real run that
writes data, and the start itself (start_from_admin). Only for those who may start runs.

The form only turns what a browser sends into JSON values; Parameter.clean and
Operation.clean decide what is valid, exactly as for the CLI and task kwargs, and what
they refuse is a form error, never a 500 and never a recorded run."""

import os
from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from maintenance import heartbeat, oneline, operations
from maintenance.admin_actions import may_start, start_from_admin
from maintenance.engine.runs import screen
from maintenance.operations.base import COMMON_PARAMETERS, Operation, Parameter, ParameterError
from maintenance.operations.registry import UnknownOperation

TEMPLATES = "admin/maintenance/maintenancerun/"
LIST_TEMPLATE = TEMPLATES + "start_list.html"
FORM_TEMPLATE = TEMPLATES + "start_form.html"
CONFIRM_TEMPLATE = TEMPLATES + "start_confirmation.html"
LIST_URL = "maintenance_maintenancerun_start"
FORM_URL = "maintenance_maintenancerun_start_operation"
CONFIRM, BACK = "confirm", "back"  # the confirmation page's buttons (names in the POST)


# --- the fields: typed widgets that hand the value, as typed, to Parameter.clean ---


class WholeNumberField(forms.IntegerField):
    """A number input whose text goes to Parameter.clean unconverted: Django's int()
    would take "٣" or "5.0", which the CLI and task kwargs refuse."""

    def to_python(self, value: object) -> str | None:
        return None if value in self.empty_values else str(value)


class NamesField(forms.MultipleChoiceField):
    """Checkboxes for a list of known names. A name that is not among them goes on to
    Parameter.clean, which says which are unknown and lists the known ones."""

    def validate(self, value: list[str]) -> None:
        pass


def field_for(operation: Operation, parameter: Parameter) -> forms.Field:
    """The form field of one declared parameter, with its help and default. Not required
    for Django: a missing required value is Parameter.clean's error to give."""
    common = {
        "label": parameter.name,
        "required": False,
        "help_text": help_of(operation, parameter),
    }
    attrs = {"required": True} if parameter.required else {}
    if parameter.kind == "bool":
        # A dry run is what an operator should have to untick.
        initial = True if parameter.name == "dry_run" else bool(parameter.default)
        return forms.BooleanField(initial=initial, **common)
    if parameter.kind == "int":
        bounds = {"min": parameter.minimum, "max": parameter.maximum}
        attrs |= {key: value for key, value in bounds.items() if value is not None}
        widget = forms.NumberInput(attrs=attrs | {"class": "vIntegerField"})
        return WholeNumberField(initial=parameter.default, widget=widget, **common)
    if parameter.kind == "list" and parameter.choices:
        return NamesField(
            choices=[(name, name) for name in parameter.choices],
            initial=list(parameter.default or parameter.choices),
            # The admin's own class for a list of choices: labels as wide as the names.
            widget=forms.CheckboxSelectMultiple(attrs={"class": "radiolist"}),
            **common,
        )
    # Text, and a list without known names (comma-separated, as on the command line).
    initial = ", ".join(parameter.default) if parameter.kind == "list" else parameter.default
    widget = forms.TextInput(attrs=attrs | {"class": "vTextField"})
    return forms.CharField(initial=initial, strip=False, empty_value=None, widget=widget, **common)


def help_of(operation: Operation, parameter: Parameter) -> str:
    if parameter.name == "partitions" and not operation.partitionable:
        return f"{parameter.help} {operation.name} cannot be split: leave it at 1."
    if parameter.is_path:
        return f"{parameter.help} An absolute path on the workers' machine."
    return parameter.help


def parameters_of(operation: Operation) -> tuple[Parameter, ...]:
    return (*operation.parameters, *COMMON_PARAMETERS)


class StartForm(forms.Form):
    """The parameters of one operation. Once valid, `raw` holds the JSON values to start
    the run with and `run` what Operation.clean made of them."""

    def __init__(self, operation: Operation, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.operation = operation
        self.raw: dict = {}
        self.run = None
        for parameter in parameters_of(operation):
            self.fields[parameter.name] = field_for(operation, parameter)

    def clean(self) -> dict:
        raw = {}
        for parameter in parameters_of(self.operation):
            if parameter.name not in self.cleaned_data:
                continue  # Django has said why (a NUL character)
            value = self.cleaned_data[parameter.name]
            why = refusal(parameter, value)  # an empty required field is refused too
            if why is not None:
                self.add_error(parameter.name, why)
            elif value is not None:  # left empty: the declared default
                raw[parameter.name] = value
        if not self.errors:
            # The whole set: what no single parameter can say (partitions for an import).
            try:
                self.run = self.operation.clean(raw)
            except ParameterError as error:
                raise ValidationError(oneline.first_line(error)) from None
            self.raw = raw
        return self.cleaned_data


def refusal(parameter: Parameter, value: object) -> str | None:
    """Why one value cannot be used (one line), or None."""
    if parameter.is_path and isinstance(value, str) and not os.path.isabs(value):
        # The CLI makes a path absolute where it runs; here that would be the web
        # server's directory, which means nothing to the operator or the worker.
        return f"{parameter.name} must be an absolute path, not {oneline.escape(value)!r}"
    try:
        screen(value)  # bounded JSON, as start_from_admin will check again
        parameter.clean(value)
    except ParameterError as error:
        return oneline.first_line(error)
    return None


def writes(form: StartForm) -> bool:
    """Whether the run changes data, so that it needs a confirmation: every real run
    does, except one whose `fix` is off (a validation then records findings only)."""
    return not form.run.dry_run and form.run.params.get("fix", True) is not False


# --- the warning when no worker is there to take the run ---


def no_worker_warning(now=None) -> str | None:
    """What to say when the heartbeat is stale by monitoring's rule, or None: a run
    started now waits in the queue."""
    now = now or timezone.now()
    last = heartbeat.last()
    if not heartbeat.is_stale(last, now):
        return None
    wait = "the run will wait in the queue until one starts"
    if last is None:
        return f"No worker has ever answered: {wait}."
    seen, today = timezone.localtime(last.seen_at), timezone.localtime(now)
    # A time alone would read as today's.
    when = f"{seen:%H:%M}" if seen.date() == today.date() else f"{seen:%Y-%m-%d %H:%M}"
    return f"No worker has answered since {when}: {wait}."


# --- the views ---


def urls(modeladmin) -> list[URLPattern]:
    """The list of operations and each one's form, for MaintenanceRunAdmin.get_urls
    (before the admin's own, whose <path:object_id>/ would take "start/")."""
    return [
        path("start/", guarded(modeladmin, choose, ["GET"]), name=LIST_URL),
        path(
            "start/<str:operation_name>/",
            guarded(modeladmin, start_view, ["GET", "POST"]),
            name=FORM_URL,
        ),
    ]


def guarded(modeladmin, view: Callable, methods: list[str]) -> Callable:
    """An admin view (staff login, CSRF) that answers 403 to anyone who may not start
    runs, whatever the method, before anything else."""

    def checked(request: HttpRequest, **kwargs) -> HttpResponse:
        if not may_start(request):
            raise PermissionDenied
        if request.method not in methods:
            return HttpResponseNotAllowed(methods)
        return view(modeladmin, request, **kwargs)

    return modeladmin.admin_site.admin_view(checked)


def choose(modeladmin, request: HttpRequest) -> HttpResponse:
    """Every registered operation with its description, each a link to its form."""
    offered = [
        (operation, reverse(f"admin:{FORM_URL}", args=[operation.name]))
        for operation in operations.all_operations()
    ]
    context = page_context(modeladmin, request, "Start a run") | {"operations": offered}
    return TemplateResponse(request, LIST_TEMPLATE, context)


def start_view(modeladmin, request: HttpRequest, operation_name: str) -> HttpResponse:
    """GET: the form. POST: check it; a run that writes data goes to the confirmation
    page first, whose Confirm posts the same values again (checked again: a revert may
    have been done meanwhile) and starts it; Back returns to the form with them."""
    operation = operation_or_404(operation_name)
    if request.method == "GET":
        return form_page(modeladmin, request, StartForm(operation))
    form = StartForm(operation, request.POST)
    if not form.is_valid() or BACK in request.POST:
        return form_page(modeladmin, request, form)
    if writes(form) and CONFIRM not in request.POST:
        return confirmation_page(modeladmin, request, form)
    run = start_from_admin(modeladmin, request, operation.name, form.raw)
    if run is None:  # its message says why (the broker); the values stay for a retry
        return form_page(modeladmin, request, form)
    if warning := no_worker_warning():
        modeladmin.message_user(request, warning, messages.WARNING)
    return redirect(reverse("admin:maintenance_maintenancerun_change", args=[run.pk]))


def operation_or_404(name: str) -> Operation:
    try:
        return operations.get(name)
    except UnknownOperation:
        raise Http404(f"no operation {oneline.escape(name)!r}") from None


def form_page(modeladmin, request: HttpRequest, form: StartForm) -> TemplateResponse:
    operation = form.operation
    own = [p.name for p in operation.parameters]
    fieldsets = [
        (f"Parameters of {operation.name}", {"fields": own}),
        ("Every run", {"fields": [p.name for p in COMMON_PARAMETERS]}),
    ]
    adminform = helpers.AdminForm(form, [f for f in fieldsets if f[1]["fields"]], {})
    context = page_context(modeladmin, request, f"Start {operation.name}") | {
        "operation": operation,
        "adminform": adminform,
        "form": form,
        "errors": [error for errors in form.errors.values() for error in errors],
        "no_worker": no_worker_warning(),
    }
    return TemplateResponse(request, FORM_TEMPLATE, context)


def confirmation_page(modeladmin, request: HttpRequest, form: StartForm) -> TemplateResponse:
    operation = form.operation
    run = form.run
    values = {**run.params, "dry_run": run.dry_run, "batch_size": run.batch_size}
    values["partitions"] = run.partitions
    rows = [(p.name, shown(values.get(p.name)), p.help) for p in parameters_of(operation)]
    context = page_context(modeladmin, request, f"Start {operation.name} for real?") | {
        "operation": operation,
        "form": form,
        "rows": rows,
        "no_worker": no_worker_warning(),
    }
    return TemplateResponse(request, CONFIRM_TEMPLATE, context)


def shown(value: object) -> str:
    """A cleaned value as the confirmation page lists it."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value)
    return oneline.escape(str(value))


def page_context(modeladmin, request: HttpRequest, title: str) -> dict:
    return {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "title": title,
        "list_url": reverse(f"admin:{LIST_URL}"),
    }
