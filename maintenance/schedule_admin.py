"""django-celery-beat's PeriodicTask admin, made aware of the maintenance operations:
kwargs of a maintenance task are validated when saved, and "Run selected tasks" records
an admin-triggered run with the schedule's kwargs and name."""

import json

from django.contrib import admin, messages
from django_celery_beat.admin import PeriodicTaskAdmin, PeriodicTaskForm
from django_celery_beat.models import PeriodicTask

from maintenance import operations
from maintenance.admin_actions import may_start, start_from_admin
from maintenance.operations.base import ParameterError
from maintenance.operations.registry import UnknownOperation

PREFIX = "maintenance."


def operation_name(task_name):
    """The operation a task name runs, or None for any other task."""
    if not task_name or not task_name.startswith(PREFIX):
        return None
    name = task_name[len(PREFIX) :]
    try:
        return operations.get(name).name
    except UnknownOperation:
        return None


def schedule_kwargs(periodic_task):
    """The stored kwargs as a dict; anything else is passed on for validation to refuse."""
    try:
        return json.loads(periodic_task.kwargs or "{}")
    except ValueError as error:
        return {"<kwargs>": f"not JSON: {error}"}


class MaintenanceScheduleForm(PeriodicTaskForm):
    def clean(self):
        data = super().clean()
        name = operation_name(data.get("task"))
        if name is None or "kwargs" in self.errors:
            return data
        kwargs = json.loads(data.get("kwargs") or "{}")
        try:
            operations.get(name).clean(kwargs)
        except ParameterError as error:
            self.add_error("kwargs", f"Invalid kwargs for {name}: {error}")
        if json.loads(data.get("args") or "[]"):
            self.add_error("args", "Maintenance tasks take keyword arguments only; use kwargs.")
        return data


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class MaintenancePeriodicTaskAdmin(PeriodicTaskAdmin):
    form = MaintenanceScheduleForm

    @admin.action(description="Run selected tasks")
    def run_tasks(self, request, queryset):
        maintenance = [task for task in queryset if operation_name(task.task)]
        if maintenance and not may_start(request):
            self.message_user(
                request, "You do not have permission to start maintenance runs.", messages.ERROR
            )
            return
        for task in maintenance:
            start_from_admin(
                self,
                request,
                operation_name(task.task),
                schedule_kwargs(task),
                periodic_task_name=task.name,
            )
        others = queryset.exclude(pk__in=[task.pk for task in maintenance])
        if others.exists():
            super().run_tasks(request, others)
