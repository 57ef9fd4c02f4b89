"""The Celery app. Workers and beat start it with `celery -A worker ...`."""

import importlib
import os

from celery import Celery

from maintenance.worker_limits import WorkerLimitsTask
from worker.env import SettingError, exit_with

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker.settings")

# Read the settings now, not lazily inside Celery or Django, so that every entry point
# (celery, manage.py, wsgi, django.setup()) answers a bad variable with one line.
try:
    importlib.import_module(os.environ["DJANGO_SETTINGS_MODULE"])
except SettingError as error:
    exit_with(error)

# Every task runs under the worker's own time limits, never those its message carries
# (maintenance/worker_limits.py).
app = Celery("worker", task_cls=WorkerLimitsTask)
# Every CELERY_* Django setting becomes the matching Celery setting.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
