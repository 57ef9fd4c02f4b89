"""django-celery-beat's CrontabSchedule admin, with a warning after saving a crontab
whose fire times daylight saving time makes missing or doubled in its own zone within
a year, saying on which dates and what beat does then (maintenance.dst)."""

from django.contrib import admin, messages
from django.utils import timezone
from django_celery_beat.admin import CrontabScheduleAdmin
from django_celery_beat.models import CrontabSchedule

from maintenance.dst import dst_warning

admin.site.unregister(CrontabSchedule)


@admin.register(CrontabSchedule)
class MaintenanceCrontabAdmin(CrontabScheduleAdmin):
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        try:
            warning = dst_warning(obj, timezone.now())
        except (ValueError, KeyError):  # the form validates the fields: nothing to add here
            return
        if warning:
            self.message_user(request, warning, messages.WARNING)
