"""/health/ under hostile conditions: a broker that refuses, hangs (a real socket server
that accepts and never answers) or is slow, no worker, stale or missing heartbeats, a
database that is down or hangs. It always answers within a second, with the right status
code, and tells anonymous and non-staff callers each check's status only."""

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test import Client, override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maintenance import views
from maintenance.heartbeat import NAME
from maintenance.models import Heartbeat

# The checks run in their own threads with their own connections: they only see
# committed data, so these tests commit (transactional_db).
pytestmark = pytest.mark.django_db(transaction=True)
HYPOTHESIS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
LIMIT_S = 1.0
REDIS = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
SECRETS = re.compile(r"127\.0\.0\.1|localhost|://|redis|amqp|error|refused|timeout", re.I)


def _accept_forever(server: socket.socket, handle) -> None:
    while True:
        try:
            client, _ = server.accept()
        except OSError:  # the server socket was closed: the test is over
            return
        handle(client)


@contextmanager
def tcp_server(handle) -> Iterator[int]:
    """A real TCP server on 127.0.0.1; yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    threading.Thread(target=_accept_forever, args=(server, handle), daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def closed_port() -> int:
    """A port nobody listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pump(source: socket.socket, target: socket.socket, delay: float) -> None:
    try:
        while data := source.recv(65536):
            time.sleep(delay)
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            end.close()


def slow_proxy_to(host: str, port: int, delay: float):
    """A handler forwarding to the real broker, `delay` seconds late each way."""

    def handle(client: socket.socket) -> None:
        upstream = socket.create_connection((host, port))
        for pair in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(*pair, delay), daemon=True).start()

    return handle


silent_clients: list[socket.socket] = []


def hold_silently(client: socket.socket) -> None:
    silent_clients.append(client)  # accepted, never read, never answered


@pytest.fixture(scope="module")
def brokers():
    """broker state -> URL; the same database number as the real broker."""
    real = REDIS.split("://", 1)[1].rsplit("@", 1)[-1]
    hostport, _, db = real.partition("/")
    host, _, port = hostport.partition(":")
    with (
        tcp_server(hold_silently) as silent,
        tcp_server(slow_proxy_to(host, int(port or 6379), 0.05)) as slow,
    ):
        yield {
            "up": REDIS,
            "refusing": f"redis://127.0.0.1:{closed_port()}/{db or 0}",
            "hanging": f"redis://127.0.0.1:{silent}/{db or 0}",
            "slow": f"redis://127.0.0.1:{slow}/{db or 0}",
        }
        for client in silent_clients:
            client.close()


def wait_for_stuck_checks(limit: float = 5.0) -> None:
    """Let checks stuck on the previous state time out, so each example starts clean."""
    end = time.monotonic() + limit
    for lock in views._IN_FLIGHT.values():
        if lock.acquire(timeout=max(0.0, end - time.monotonic())):
            lock.release()


@pytest.fixture
def users():
    model = get_user_model()
    return {
        "anonymous": None,
        "non-staff": model.objects.create_user("player"),
        "staff": model.objects.create_user("keeper", is_staff=True),
    }


def set_heartbeat(state: str) -> None:
    Heartbeat.objects.filter(name=NAME).delete()
    if state != "none":
        age = timedelta(seconds=5) if state == "fresh" else timedelta(days=2)
        Heartbeat.objects.create(
            name=NAME, seen_at=timezone.now() - age, hostname="worker-host.internal"
        )


def timed_request(client: Client, method: str) -> tuple[float, object]:
    started = time.perf_counter()
    response = getattr(client, method.lower())("/health/")
    return time.perf_counter() - started, response


def assert_no_secrets(body: str, ports: list[str]) -> None:
    assert not SECRETS.search(body), body
    assert "worker-host" not in body and socket.gethostname() not in body, body
    for port in ports:
        assert f":{port}" not in body and f'"{port}"' not in body, body


@given(
    broker=st.sampled_from(["up", "refusing", "hanging", "slow"]),
    beat=st.sampled_from(["none", "fresh", "stale"]),
    user=st.sampled_from(["anonymous", "non-staff", "staff"]),
    method=st.sampled_from(["GET", "HEAD"]),
)
@HYPOTHESIS
def test_health_answers_in_time_and_hides_details(brokers, users, broker, beat, user, method):
    wait_for_stuck_checks()
    set_heartbeat(beat)
    client = Client()
    if users[user] is not None:
        client.force_login(users[user])

    with override_settings(CELERY_BROKER_URL=brokers[broker]):
        elapsed, response = timed_request(client, method)

    assert elapsed < LIMIT_S, f"{broker}/{beat}/{user}/{method}: {elapsed:.2f}s"
    assert response.status_code == 200  # the database is up: degraded at worst
    if method == "HEAD":
        assert response.content == b""
        return
    body = response.json()
    checks = body["checks"]
    assert set(body) == {"status", "checks"}
    assert set(checks) == {"database", "broker", "worker", "beat_heartbeat"}
    assert body["status"] == "degraded"  # no worker runs in the tests
    assert checks["database"]["ok"] is True and checks["worker"]["ok"] is False
    assert checks["beat_heartbeat"]["ok"] is (beat == "fresh")
    if broker in ("refusing", "hanging"):
        assert checks["broker"]["ok"] is False
    if broker == "up":
        assert checks["broker"]["ok"] is True
    if user == "staff":
        assert all("detail" in check for check in checks.values())
        return
    assert all(set(check) == {"ok", "ms"} for check in checks.values())
    ports = [url.rsplit(":", 1)[1].split("/")[0] for url in brokers.values()]
    assert_no_secrets(response.content.decode(), ports)


def test_a_hanging_broker_is_reported_as_no_answer(brokers, users, client):
    client.force_login(users["staff"])

    with override_settings(CELERY_BROKER_URL=brokers["hanging"]):
        elapsed, response = timed_request(client, "GET")

    assert elapsed < LIMIT_S
    broker = response.json()["checks"]["broker"]
    assert broker["ok"] is False
    # A silent broker: this request's check timed out, or an earlier one still hangs.
    assert any(
        text in broker["detail"] for text in ("no answer within", "imeout", "has not answered yet")
    )
    wait_for_stuck_checks()


@contextmanager
def database_settings(**changes) -> Iterator[None]:
    """Point connections opened from now on (the check threads') elsewhere."""
    original = connections.settings["default"]
    connections.settings["default"] = {**original, **changes}
    try:
        yield
    finally:
        connections.settings["default"] = original


def unreachable_database(state: str, silent_port: int) -> dict:
    if connection.vendor == "sqlite":
        return {"NAME": "/nonexistent-directory/db.sqlite3"}
    port = closed_port() if state == "down" else silent_port
    return {"HOST": "127.0.0.1", "PORT": str(port), "OPTIONS": {}}


@pytest.mark.parametrize("state", ["down", "hanging"])
@pytest.mark.parametrize("user", ["anonymous", "staff"])
def test_a_database_that_is_down_or_hangs_gives_503_in_time(users, state, user):
    wait_for_stuck_checks()
    client = Client()
    if user == "staff":
        client.force_login(users["staff"])
    with (
        tcp_server(hold_silently) as silent,
        database_settings(**unreachable_database(state, silent)),
    ):
        elapsed, response = timed_request(client, "GET")
        head_elapsed, head = timed_request(client, "HEAD")

    assert elapsed < LIMIT_S and head_elapsed < LIMIT_S
    assert response.status_code == 503 and head.status_code == 503 and head.content == b""
    body = response.json()
    assert body["status"] == "down" and body["checks"]["database"]["ok"] is False
    # The login cannot be confirmed without the database: no details for anyone.
    assert all(set(check) == {"ok", "ms"} for check in body["checks"].values())
    assert_no_secrets(response.content.decode(), [])


def test_check_threads_close_their_database_connections(client):
    if connection.vendor != "postgresql":
        pytest.skip("counts server-side sessions")

    def sessions() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
            return cursor.fetchone()[0]

    wait_for_stuck_checks()  # the hanging-database tests leave a check connecting
    before = sessions()
    for _ in range(5):
        assert client.get("/health/").status_code == 200
    wait_for_stuck_checks()
    time.sleep(0.2)

    assert sessions() <= before
