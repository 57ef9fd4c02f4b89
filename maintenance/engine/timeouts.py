"""Per-batch lock and statement timeouts (PostgreSQL), and telling them apart.

A batch that meets a row the application holds locked must not wait long while holding
its own row locks: everything the application writes behind them would queue up. So
every batch transaction sets `lock_timeout` and `statement_timeout` for itself only
(`set_config(..., true)` is SET LOCAL: gone at commit or rollback, whatever the pool).
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

# SQLSTATEs: lock_not_available (lock_timeout) and query_canceled (statement_timeout).
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"


class BatchTimedOut(Exception):
    """A batch was rolled back by one of its timeouts; the run backs off and retries."""

    def __init__(self, kind: str, limit_ms: int):
        self.kind = kind  # "lock" or "statement"
        self.limit_ms = limit_ms
        if kind == "lock":
            message = f"a row lock stayed taken past lock_timeout ({limit_ms} ms)"
        else:  # statement_timeout, or a statement cancelled by hand (pg_cancel_backend)
            message = f"a statement was cancelled (statement_timeout {limit_ms} ms)"
        super().__init__(message)


def limit_this_transaction() -> None:
    """Inside the batch's transaction: bound its lock waits and its statements."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true), "
            "set_config('statement_timeout', %s, true)",
            [
                f"{settings.MAINTENANCE_LOCK_TIMEOUT_MS}ms",
                f"{settings.MAINTENANCE_STATEMENT_TIMEOUT_MS}ms",
            ],
        )


def as_timeout(error: BaseException) -> BatchTimedOut | None:
    """The timeout `error` stands for, or None when it is some other database error."""
    cause = error
    while cause is not None:
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if state == LOCK_NOT_AVAILABLE:
            return BatchTimedOut("lock", settings.MAINTENANCE_LOCK_TIMEOUT_MS)
        if state == QUERY_CANCELED:
            return BatchTimedOut("statement", settings.MAINTENANCE_STATEMENT_TIMEOUT_MS)
        cause = cause.__cause__
    return None
