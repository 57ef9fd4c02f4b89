"""A database outage in the logs: one line per failed attempt, and the traceback of the
first failure once, when the database answers again, instead of pages per retry."""

from __future__ import annotations

import logging
import threading
import time
import traceback

from django.db import InterfaceError, OperationalError

from maintenance import oneline

logger = logging.getLogger(__name__)
# What a database that does not answer raises; a DataError or ProgrammingError is a bug
# or bad data, never an outage to wait out.
OUTAGE_ERRORS = (OperationalError, InterfaceError)


class Outage:
    """Database errors in a row, in this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self.errors = 0
        self.since = 0.0
        self.first = ""

    def failed(self, error: BaseException) -> int:
        with self._lock:
            if not self.errors:
                self.since = time.monotonic()
                self.first = "".join(
                    traceback.format_exception(type(error), error, error.__traceback__, chain=False)
                )
            self.errors += 1
            return self.errors

    def answered(self) -> None:
        with self._lock:
            errors, first, since = self.errors, self.first, self.since
            self.errors, self.first = 0, ""
        if errors:
            logger.warning(
                "the database answers again after %d failed attempts in %.0fs; the first "
                "failure was:\n%s",
                errors,
                time.monotonic() - since,
                first.rstrip(),
            )


OUTAGE = Outage()


class OneLinePerOutageError(logging.Filter):
    """Turns a logged database error with its traceback into one line; the traceback
    is kept for OUTAGE.answered()."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OUTAGE_ERRORS):
            count = OUTAGE.failed(error)
            said = " ".join(record.getMessage().split())  # an error's repr spans lines
            record.msg = "%s (database error %d in a row)"
            record.args = (oneline.escape(said), count)
            record.exc_info = record.exc_text = None
        return True


def quiet_outages_of(*logger_names: str) -> None:
    for name in logger_names:
        target = logging.getLogger(name)
        if not any(isinstance(f, OneLinePerOutageError) for f in target.filters):
            target.addFilter(OneLinePerOutageError())
