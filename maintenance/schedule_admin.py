"""django-celery-beat's PeriodicTask admin, made aware of the maintenance operations:
kwargs of a maintenance task are validated when saved, "Run selected tasks" records
an admin-triggered run with the schedule's kwargs and name, and creating, changing,
enabling or running a maintenance schedule needs the start_maintenancerun permission.
Every change made here is remembered, so a run that beat starts names who made it."""

from celery import current_app
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django_celery_beat.admin import PeriodicTaskAdmin, PeriodicTaskForm
from django_celery_beat.models import PeriodicTask

from maintenance import operations
from maintenance.admin_actions import may_start, start_from_admin
from maintenance.engine.enqueue import BrokerUnavailable, check_broker
from maintenance.engine.runs import cut_error, record_rejected, screen
from maintenance.models import MaintenanceRun
from maintenance.operations.base import ParameterError
from maintenance.operations.registry import UnknownOperation
from maintenance.schedules import (
    MAINTENANCE_PREFIX,
    ScheduleArgumentsError,
    load_json,
    record_change,
    schedule_arguments,
)

PREFIX = MAINTENANCE_PREFIX
NEEDS_PERMISSION = (
    "You do not have permission to start maintenance runs, which creating, changing, "
    "enabling or running a maintenance schedule needs."
)


def operation_name(task_name):
    """The operation a task name runs, or None for any other task."""
    if not task_name or not task_name.startswith(PREFIX):
        return None
    name = task_name[len(PREFIX) :]
    try:
        return operations.get(name).name
    except UnknownOperation:
        return None


def is_maintenance(task_name) -> bool:
    # Every maintenance.* task needs the permission, registered operation or not.
    return bool(task_name) and str(task_name).startswith(PREFIX)


class MaintenanceScheduleForm(PeriodicTaskForm):
    request = None  # set by the admin's get_form

    def _clean_json(self, field):
        # The parent's json reader raises RecursionError on deep nesting: a 500.
        value = self.cleaned_data[field]
        try:
            schedule_arguments(value, None) if field == "args" else schedule_arguments(None, value)
        except ScheduleArgumentsError as error:
            raise forms.ValidationError(str(error)) from None
        return value

    def clean_headers(self):
        # Beat reads headers as a JSON object too; the parent does not check them.
        try:
            load_json(self.cleaned_data.get("headers") or "{}", "headers", dict)
        except ScheduleArgumentsError as error:
            raise forms.ValidationError(str(error)) from None
        return self.cleaned_data.get("headers")

    def clean(self):
        # The parent reads cleaned_data["task"], which a refused task field lacks.
        self.cleaned_data.setdefault("task", "")
        data = super().clean()
        self._check_permission(data)
        task = data.get("task")
        if not is_maintenance(task) or "kwargs" in self.errors or "args" in self.errors:
            return data
        name = operation_name(task)
        if name is None and task not in current_app.tasks:
            # Beat would send it and no worker would know it: an unrecorded failure.
            self.add_error("task", f"No maintenance task is called {task}.")
            return data
        args, kwargs = schedule_arguments(data.get("args"), data.get("kwargs"))
        if name is not None:
            try:
                screen(kwargs)
                operations.get(name).clean(kwargs)
            except (ParameterError, TypeError) as error:
                self.add_error("kwargs", cut_error(f"Invalid kwargs for {name}: {error}"))
        if args:
            self.add_error("args", "Maintenance tasks take keyword arguments only; use kwargs.")
        return data

    def _check_permission(self, data):
        before = self.instance.task if self.instance.pk else None
        touches = is_maintenance(data.get("task")) or is_maintenance(before)
        if touches and not (self.request is not None and may_start(self.request)):
            raise forms.ValidationError(NEEDS_PERMISSION)


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class MaintenancePeriodicTaskAdmin(PeriodicTaskAdmin):
    form = MaintenanceScheduleForm

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"request": request})

    def save_model(self, request, obj, form, change):
        before = PeriodicTask.objects.filter(pk=obj.pk).values_list("task", flat=True).first()
        if (is_maintenance(obj.task) or is_maintenance(before)) and not may_start(request):
            raise PermissionDenied(NEEDS_PERMISSION)  # the form refuses first; a 403 if not
        super().save_model(request, obj, form, change)
        record_change(obj, request.user.get_username())

    def _refused(self, request, queryset) -> bool:
        """Whether the selection holds a maintenance schedule this user may not touch."""
        if may_start(request):
            return False
        if any(is_maintenance(task) for task in queryset.values_list("task", flat=True)):
            self.message_user(request, NEEDS_PERMISSION, messages.ERROR)
            return True
        return False

    def _remember(self, request, queryset):
        for task in queryset:
            record_change(task, request.user.get_username())

    @admin.action(description="Enable selected tasks")
    def enable_tasks(self, request, queryset):
        if self._refused(request, queryset):
            return
        super().enable_tasks(request, queryset)
        self._remember(request, queryset)

    @admin.action(description="Disable selected tasks")
    def disable_tasks(self, request, queryset):
        super().disable_tasks(request, queryset)
        self._remember(request, queryset)

    @admin.action(description="Toggle activity of selected tasks")
    def toggle_tasks(self, request, queryset):
        if self._refused(request, queryset):
            return
        super().toggle_tasks(request, queryset)
        self._remember(request, queryset)

    @admin.action(description="Run selected tasks")
    def run_tasks(self, request, queryset):
        if self._refused(request, queryset):
            return
        maintenance = [task for task in queryset if is_maintenance(task.task)]
        for task in maintenance:
            self._run_maintenance(request, task)
        others = queryset.exclude(pk__in=[task.pk for task in maintenance])
        if others.exists():
            self._run_others(request, others)

    def _run_maintenance(self, request, task):
        name = operation_name(task.task)
        origin = {
            "trigger": MaintenanceRun.Trigger.ADMIN,
            "requested_by": request.user.get_username(),
            "periodic_task_name": task.name,
        }
        try:
            if name is None:
                raise ScheduleArgumentsError(f"no maintenance operation is called {task.task}")
            args, kwargs = schedule_arguments(task.args, task.kwargs)
            if args:
                raise ScheduleArgumentsError("maintenance tasks take keyword arguments only")
        except ScheduleArgumentsError as error:
            run = record_rejected(name or task.task[:64], {}, error, **origin)
            self.message_user(
                request, f"Run #{run.pk} of {task.task} failed: {run.error}", messages.ERROR
            )
            return
        start_from_admin(self, request, name, kwargs, periodic_task_name=task.name)

    def _run_others(self, request, queryset):
        """django-celery-beat's own action, but never a 500: unreadable arguments or a
        broker that is down are a message."""
        for task in queryset:
            try:
                schedule_arguments(task.args, task.kwargs)
            except ScheduleArgumentsError as error:
                self.message_user(request, f"{task.name} not run: {error}", messages.ERROR)
                return
        try:
            check_broker()
            super().run_tasks(request, queryset)
        except BrokerUnavailable as error:
            self.message_user(request, f"Tasks not run: {cut_error(error)}", messages.ERROR)
        except Exception as error:  # kombu's transport errors have no common base
            self.message_user(request, f"Tasks not run: {cut_error(error)}", messages.ERROR)
