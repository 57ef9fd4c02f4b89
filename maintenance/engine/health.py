"""The database's health, as the runner sees it before each batch.

Two signals of DESIGN.md, read on PostgreSQL in one query: how far the replicas
replay behind this primary, and how many sessions wait on locks. Either one over its
limit says "back off" and why. Readings are cached for a second per process, so a fast
run asks the server once a second, not once a batch. SQLite has no such signals.

Seeing other sessions takes the pg_monitor role (or a superuser): without it the
catalogue views hide other users' rows, both signals read as zero and nothing throttles.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import OperationalError, ProgrammingError, connection

CACHE_SECONDS = 1.0

# The worst replay lag over all standbys; NULL (no standby, or just caught up) is 0.
REPLICATION_LAG_SQL = (
    "SELECT COALESCE(MAX(EXTRACT(EPOCH FROM replay_lag)), 0)::float FROM pg_stat_replication"
)
# Sessions of this database waiting for a lock, not counting this one.
LOCK_WAITERS_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND datname = current_database() AND pid <> pg_backend_pid()"
)


@dataclass(frozen=True)
class Reading:
    replication_lag_s: float
    lock_waiters: int

    def reason(self) -> str:
        """Why a run should wait now, or '' when the database is healthy."""
        lag_limit = settings.MAINTENANCE_MAX_REPLICATION_LAG_S
        if self.replication_lag_s > lag_limit:
            return f"replication lag {self.replication_lag_s:.1f}s > {lag_limit:g}s"
        waiter_limit = settings.MAINTENANCE_MAX_LOCK_WAITERS
        if self.lock_waiters > waiter_limit:
            return f"{self.lock_waiters} sessions waiting on locks > {waiter_limit}"
        return ""


logger = logging.getLogger(__name__)
HEALTHY = Reading(0.0, 0)
_cache: dict[str, tuple[float, Reading]] = {}


def read() -> Reading:
    """The signals now, from the server (uncached)."""
    if connection.vendor != "postgresql":
        return HEALTHY
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT ({REPLICATION_LAG_SQL}), ({LOCK_WAITERS_SQL})")
            lag, waiters = cursor.fetchone()
        lag, waiters = float(lag or 0), int(waiters or 0)
    except OperationalError:
        raise  # the connection itself: the runner's retries deal with it
    except (ProgrammingError, TypeError, ValueError) as error:
        # A server that will not say (a pooler, a restricted role): run unthrottled.
        logger.warning("database health unknown, not throttling: %s", error)
        return HEALTHY
    return Reading(lag, waiters)


def throttle_reason() -> str:
    """Why a run should back off before its next batch, or ''; cached for a second."""
    now = time.monotonic()
    cached = _cache.get(connection.alias)
    if cached is None or now - cached[0] >= CACHE_SECONDS:
        cached = (now, read())
        _cache[connection.alias] = cached
    return cached[1].reason()


def forget() -> None:
    """Drop the cached readings (tests that change the signals)."""
    _cache.clear()
