"""/health/: JSON for compose healthchecks and load balancers."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from maintenance.heartbeat import NAME
from maintenance.models import Heartbeat

# The checks read the database from their own threads: the data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("keeper", is_staff=True))
    return client


def test_health_reports_each_dependency(client):
    response = client.get("/health/")

    body = response.json()
    assert set(body["checks"]) == {"database", "broker", "worker", "beat_heartbeat"}
    assert body["checks"]["database"]["ok"] is True
    assert body["status"] in {"ok", "degraded"}
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")


def test_an_unreachable_broker_degrades_but_keeps_the_web_up(staff_client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = staff_client.get("/health/")

    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["checks"]["broker"]["ok"] is False
    assert "refused" in body["checks"]["broker"]["detail"].lower()


def test_a_fresh_heartbeat_is_reported_to_staff(staff_client):
    Heartbeat.objects.create(name=NAME, seen_at=timezone.now(), hostname="w1")

    check = staff_client.get("/health/").json()["checks"]["beat_heartbeat"]

    assert check["ok"] is True and "w1" in check["detail"]


def test_anonymous_callers_see_the_status_only(client):
    Heartbeat.objects.create(name=NAME, seen_at=timezone.now(), hostname="w1")

    checks = client.get("/health/").json()["checks"]

    assert checks["beat_heartbeat"] == {"ok": True, "ms": checks["beat_heartbeat"]["ms"]}
    assert all(set(check) == {"ok", "ms"} for check in checks.values())


def test_get_and_head_only(client):
    head = client.head("/health/")

    assert head.status_code == 200 and head.content == b""
    assert client.post("/health/").status_code == 405
