#!/usr/bin/env python
"""Django's command-line utility for tg-maintenance."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker.settings")
    # Importing worker reads the settings (worker/celery.py): a bad variable is one line
    # and exit 1, or 3 (Nagios UNKNOWN) for monitor_validation (worker.env.exit_code).
    from worker.env import SettingError, exit_with

    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except SettingError as error:
        exit_with(error)


if __name__ == "__main__":
    main()
