"""/health/: JSON health of the web process's dependencies, for compose and load
balancers. 503 only when the database is down: without it nothing works; the other
checks degrade the status but do not take the web container out.

Every check runs in its own thread under one overall deadline, so /health/ answers in
well under a second whatever the broker or the database does (refusing, hanging, slow).
A check that misses the deadline is "not ok". Without a staff login the answer shows
each check's status only: host names, URLs and error texts are for staff."""

import threading
import time
from collections.abc import Callable

from celery import current_app
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from kombu import Connection
from kombu.utils.url import maybe_sanitize_url

from maintenance import heartbeat

DEADLINE_S = 0.6  # the whole answer; compose's healthcheck allows a few seconds
SOCKET_TIMEOUT_S = 0.5  # bounds how long a stuck check thread lives after the deadline
DATABASE_CONNECT_TIMEOUT_S = 2  # libpq's smallest effective connect_timeout
WORKER_PING_TIMEOUT_S = 0.35  # how long to wait for workers' replies, within DEADLINE_S
DETAIL_LIMIT = 300

CheckResult = tuple[bool, str]


def _short(text: object) -> str:
    """One printable line, short: error texts can be long and multi-line."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat[:DETAIL_LIMIT] or "error"


def _error(error: BaseException) -> str:
    return _short(f"{type(error).__name__}: {error}")


def broker_url() -> str:
    """The broker the workers use: the setting celery reads at start-up."""
    return getattr(settings, "CELERY_BROKER_URL", None) or current_app.conf.broker_url


def _bounded_connection(url: str) -> Connection:
    """A broker connection that gives up quickly instead of hanging or retrying."""
    timeouts = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
        "retry_on_timeout": False,
        "max_retries": 0,
    }
    return Connection(url, connect_timeout=SOCKET_TIMEOUT_S, transport_options=timeouts)


def _bounded_database_connection() -> BaseDatabaseWrapper:
    """This thread's own connection to the default database, with short timeouts so a
    hanging database cannot keep the check thread alive for long."""
    settings_dict = {**connections.settings[DEFAULT_DB_ALIAS]}
    options = {**settings_dict.get("OPTIONS", {})}
    if settings_dict["ENGINE"].endswith("postgresql"):
        options["connect_timeout"] = DATABASE_CONNECT_TIMEOUT_S
        timeout_ms = round(SOCKET_TIMEOUT_S * 1000)
        options["options"] = f"{options.get('options', '')} -c statement_timeout={timeout_ms}"
    elif settings_dict["ENGINE"].endswith("sqlite3"):
        options["timeout"] = SOCKET_TIMEOUT_S  # waiting for a lock
    settings_dict["OPTIONS"] = options
    backend = load_backend(settings_dict["ENGINE"])
    return backend.DatabaseWrapper(settings_dict, DEFAULT_DB_ALIAS)


def _closing_database_connections(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """A check thread uses its own bounded database connection (connections are per
    thread) and closes it when done, or every health request would leave one open."""

    def run(*args: object) -> CheckResult:
        connections[DEFAULT_DB_ALIAS] = _bounded_database_connection()
        try:
            return check(*args)
        finally:
            connections[DEFAULT_DB_ALIAS].close()
            del connections[DEFAULT_DB_ALIAS]

    return run


@_closing_database_connections
def _database() -> CheckResult:
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return True, connection.vendor


def _broker() -> CheckResult:
    url = broker_url()
    with _bounded_connection(url) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=SOCKET_TIMEOUT_S)
    return True, f"reachable at {maybe_sanitize_url(url)}"


def _worker() -> CheckResult:
    with _bounded_connection(broker_url()) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=SOCKET_TIMEOUT_S)
        replies = current_app.control.ping(timeout=WORKER_PING_TIMEOUT_S, connection=conn)
    names = sorted(name for reply in replies for name in reply)
    return bool(names), ", ".join(names) if names else "no worker answered"


@_closing_database_connections
def _beat_heartbeat() -> CheckResult:
    last = heartbeat.last()
    if last is None:
        return False, "no heartbeat recorded yet"
    if heartbeat.is_stale(last):
        return False, f"stale since {last.seen_at.isoformat()}"
    return True, f"{last.seen_at.isoformat()} from {_short(last.hostname)}"


@_closing_database_connections
def _is_staff(request: HttpRequest) -> bool:
    # Reading the session and the user is a database query: bounded like the checks.
    user = request.user
    return bool(user.is_authenticated and user.is_active and user.is_staff)


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": _database,
    "broker": _broker,
    "worker": _worker,
    "beat_heartbeat": _beat_heartbeat,
}

# One thread per check kind at a time: while a check is stuck (a hanging broker or
# database), later requests report it at once instead of piling up threads.
_IN_FLIGHT = {name: threading.Lock() for name in [*CHECKS, "staff"]}


class _Task:
    """A callable run in a daemon thread; its result, if it finished in time."""

    def __init__(self, name: str, function: Callable[[], object]):
        self.name = name
        self.function = function
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.busy = False
        self.started = time.perf_counter()
        self.finished = self.started

    def start(self) -> None:
        lock = _IN_FLIGHT[self.name]
        if not lock.acquire(blocking=False):
            self.busy = True
            self.done.set()
            return
        threading.Thread(target=self._run, args=(lock,), daemon=True).start()

    def _run(self, lock: threading.Lock) -> None:
        try:
            self.result = self.function()
        except Exception as error:  # any failure of a dependency is "not ok"
            self.error = error
        finally:
            self.finished = time.perf_counter()
            lock.release()
            self.done.set()


def _run_all(tasks: list[_Task], deadline: float) -> None:
    for task in tasks:
        task.start()
    for task in tasks:
        task.done.wait(max(0.0, deadline - time.perf_counter()))


def _check_report(task: _Task, deadline_ms: int) -> dict:
    if task.busy:
        ok, detail, ms = False, "the previous check has not answered yet", 0
    elif not task.done.is_set():
        ok, detail, ms = False, f"no answer within {deadline_ms} ms", deadline_ms
    else:
        ms = round((task.finished - task.started) * 1000)
        if task.error is not None:
            ok, detail = False, _error(task.error)
        else:
            ok, detail = task.result
    return {"ok": ok, "detail": _short(detail), "ms": ms}


def _public(check: dict) -> dict:
    """What anyone may see: the status, no host names, URLs or error texts."""
    return {"ok": check["ok"], "ms": check["ms"]}


@never_cache
@require_http_methods(["GET", "HEAD"])
def health(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    deadline = started + DEADLINE_S
    tasks = [_Task(name, check) for name, check in CHECKS.items()]
    staff = _Task("staff", lambda: _is_staff(request))
    _run_all([*tasks, staff], deadline)
    deadline_ms = round(DEADLINE_S * 1000)
    checks = {task.name: _check_report(task, deadline_ms) for task in tasks}
    # Only a staff login that was confirmed in time sees the details.
    show_details = staff.done.is_set() and not staff.busy and staff.result is True
    if not show_details:
        checks = {name: _public(check) for name, check in checks.items()}

    if not checks["database"]["ok"]:
        status, code = "down", 503
    elif all(check["ok"] for check in checks.values()):
        status, code = "ok", 200
    else:
        status, code = "degraded", 200
    response = JsonResponse({"status": status, "checks": checks}, status=code)
    if request.method == "HEAD":
        response.content = b""  # same status and headers, no body
    return response
