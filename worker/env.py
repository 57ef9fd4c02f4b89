"""Typed, strict readers of the environment for worker/settings.py.

Every reader raises SettingError, whose message is one line that names the variable;
the entry points (manage.py, worker/celery.py, worker/wsgi.py) print that line and exit
instead of showing a traceback. A value is never echoed when it may hold a secret."""

import logging
import math
import os
import re
import sys
import zoneinfo
from typing import NoReturn
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})
DEVELOPMENT_SECRET_KEY = "insecure-development-key-do-not-deploy"
MIN_SECRET_LENGTH = 50
MIN_SECRET_DISTINCT = 5
DATABASE_SCHEMES = frozenset({"sqlite", "postgres", "postgresql", "pgsql"})
BROKER_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp", "memory"})
RESULT_SCHEMES = frozenset({"redis", "rediss", "rpc", "cache+memory", "memory"})
# Exit codes: 1 for everything, except Nagios UNKNOWN for the monitoring check.
EXIT_BAD_SETTING = 1
EXIT_NAGIOS_UNKNOWN = 3
GUNICORN_BOOT_ERROR = 3
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_DECIMAL = re.compile(r"[+-]?([0-9]{1,15}(\.[0-9]{0,15})?|\.[0-9]{1,15})([eE][+-]?[0-9]{1,3})?")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class SettingError(ImproperlyConfigured):
    """A variable whose value cannot be used; str() is one line naming it."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name = name


def _shown(value: str) -> str:
    """The value, quoted on one line and short, for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def raw(name: str) -> str | None:
    """The variable's text, or None when it is unset or empty (compose's `${X:-}`)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if "\x00" in value:
        raise SettingError(name, "contains a NUL character")
    return value


def boolean(name: str, default: bool) -> bool:
    value = raw(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise SettingError(
        name, f"{_shown(value)} is not a boolean (use true/false, 1/0, yes/no or on/off)"
    )


def integer(name: str, default: int | None, minimum: int, maximum: int) -> int | None:
    value = raw(name)
    if value is None:
        return default
    if not _INTEGER.fullmatch(value.strip()):
        raise SettingError(name, f"{_shown(value)} is not a whole number")
    return _in_range(name, int(value), minimum, maximum)


def number(name: str, default: float, minimum: float, maximum: float) -> float:
    value = raw(name)
    if value is None:
        return default
    if not _DECIMAL.fullmatch(value.strip()):
        raise SettingError(name, f"{_shown(value)} is not a number")
    parsed = float(value)
    if not math.isfinite(parsed):
        raise SettingError(name, f"{_shown(value)} is not a finite number")
    return _in_range(name, parsed, minimum, maximum)


def _in_range(name, value, minimum, maximum):
    if not minimum <= value <= maximum:
        raise SettingError(name, f"{value} is out of range ({minimum} to {maximum})")
    return value


def text(name: str, default: str) -> str:
    value = raw(name)
    return default if value is None else value


def text_list(name: str, default: list[str]) -> list[str]:
    value = raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def time_zone(name: str, default: str) -> str:
    value = raw(name)
    if value is None:
        return default
    if value not in zoneinfo.available_timezones():
        raise SettingError(name, f"{_shown(value)} is not a time zone name such as Europe/Berlin")
    return value


def log_level(name: str, default: str) -> str:
    value = raw(name)
    if value is None:
        return default
    level = value.strip().upper()
    if level not in logging.getLevelNamesMapping():
        names = ", ".join(sorted(set(logging.getLevelNamesMapping()) - {"NOTSET"}))
        raise SettingError(name, f"{_shown(value)} is not a log level ({names})")
    return level


def _url_parts(name: str, value: str, schemes: frozenset[str]):
    """Split and check a URL; messages never show it, since it may hold a password."""
    if any(ord(char) < 33 or ord(char) == 127 for char in value):
        raise SettingError(name, "is not a URL: it contains spaces or control characters")
    if "://" not in value:
        raise SettingError(name, "is not a URL of the form scheme://...")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port that is not 0..65535)
    except ValueError as error:
        raise SettingError(name, f"is not a valid URL ({error})") from None
    if parts.scheme not in schemes:
        raise SettingError(
            name, f"scheme {parts.scheme!r:.40} is not one of {', '.join(sorted(schemes))}"
        )
    if _BAD_ESCAPE.search(value):
        raise SettingError(name, "has a % that is not followed by two hex digits")
    return parts


def database_url(name: str, default: str) -> dict:
    value = raw(name) or default
    if value == "sqlite://:memory:":
        return environ.Env.db_url_config(value)
    parts = _url_parts(name, value, DATABASE_SCHEMES)
    if parts.scheme != "sqlite" and not parts.path.strip("/"):
        raise SettingError(name, "names no database (postgres://user@host:5432/NAME)")
    if parts.scheme == "sqlite" and (parts.netloc or not parts.path):
        raise SettingError(name, "an SQLite URL is sqlite:///relative.db or sqlite:////abs.db")
    try:
        return environ.Env.db_url_config(value)
    except Exception as error:  # the parser's own errors vary: one line, whatever they are
        raise SettingError(name, f"is not a valid database URL ({type(error).__name__})") from None


def broker_url(name: str, default: str, schemes: frozenset[str] = BROKER_SCHEMES) -> str:
    value = raw(name) or default
    parts = _url_parts(name, value, schemes)
    if parts.scheme in ("redis", "rediss"):
        database = parts.path.strip("/")
        if database and not (database.isascii() and database.isdigit() and int(database) < 16384):
            raise SettingError(name, "a Redis URL ends in a database number (redis://host:6379/0)")
    return value


def exit_code() -> int:
    """3 (Nagios UNKNOWN) for `manage.py monitor_validation`; 3 in a gunicorn worker,
    which is gunicorn's WORKER_BOOT_ERROR: the server stops instead of starting new
    workers that fail the same way forever (with --preload the master reads the settings
    and exits 1); 1 for everything else."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if program in ("manage.py", "django-admin") and command == "monitor_validation":
        return EXIT_NAGIOS_UNKNOWN
    if _in_gunicorn_worker():
        return GUNICORN_BOOT_ERROR
    return EXIT_BAD_SETTING


def _in_gunicorn_worker() -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("gunicorn.workers"):
            return True
        frame = frame.f_back
    return False


def exit_with(error: SettingError) -> NoReturn:
    """Print the one line and end the process: the settings cannot be used."""
    print(f"configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(exit_code())
