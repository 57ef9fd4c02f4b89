"""/health/: JSON health of the web process's dependencies, for compose and load
balancers. 503 only when the database is down: without it nothing works; the other
checks degrade the status but do not take the web container out."""

import time

from celery import current_app
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from maintenance import heartbeat
from maintenance.enqueue import BrokerUnavailable, check_broker

WORKER_PING_TIMEOUT = 1.0


def _timed(check):
    started = time.perf_counter()
    ok, detail = check()
    return {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000)}


def _database():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, connection.vendor
    except DatabaseError as error:
        return False, str(error).strip().splitlines()[0] if str(error).strip() else "error"


def _broker():
    try:
        check_broker()
        return True, "reachable"
    except BrokerUnavailable as error:
        return False, str(error)


def _worker():
    try:
        replies = current_app.control.ping(timeout=WORKER_PING_TIMEOUT)
    except Exception as error:  # the broker is down: already reported by _broker
        return False, f"cannot ask: {error}"
    names = sorted(name for reply in replies for name in reply)
    return bool(names), ", ".join(names) if names else "no worker answered"


def _beat_heartbeat():
    try:
        last = heartbeat.last()
    except DatabaseError:
        return False, "database unavailable"
    if last is None:
        return False, "no heartbeat recorded yet"
    if heartbeat.is_stale(last):
        return False, f"stale since {last.seen_at.isoformat()}"
    return True, f"{last.seen_at.isoformat()} from {last.hostname}"


@never_cache
@require_GET
def health(request):
    checks = {
        "database": _timed(_database),
        "broker": _timed(_broker),
        "worker": _timed(_worker),
        "beat_heartbeat": _timed(_beat_heartbeat),
    }
    if not checks["database"]["ok"]:
        status, code = "down", 503
    elif all(check["ok"] for check in checks.values()):
        status, code = "ok", 200
    else:
        status, code = "degraded", 200
    return JsonResponse({"status": status, "checks": checks}, status=code)
