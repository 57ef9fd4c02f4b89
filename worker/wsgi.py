"""The WSGI application (gunicorn worker.wsgi:application)."""

import os

# Importing worker reads the settings first (worker/celery.py): a bad variable is one
# line and an exit, never a traceback; see worker.env.exit_code for gunicorn.
from worker.env import SettingError, exit_with

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker.settings")

try:
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
except SettingError as error:
    exit_with(error)
