"""/health/: JSON for compose healthchecks and load balancers."""

import pytest
from celery import current_app
from django.utils import timezone

from maintenance.heartbeat import NAME
from maintenance.models import Heartbeat

pytestmark = pytest.mark.django_db


def test_health_reports_each_dependency(client):
    response = client.get("/health/")

    body = response.json()
    assert set(body["checks"]) == {"database", "broker", "worker", "beat_heartbeat"}
    assert body["checks"]["database"]["ok"] is True
    assert body["status"] in {"ok", "degraded"}
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")


def test_an_unreachable_broker_degrades_but_keeps_the_web_up(client, monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(current_app.conf, "broker_url", "redis://127.0.0.1:1/0")

    response = client.get("/health/")

    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["checks"]["broker"]["ok"] is False
    assert "unreachable" in body["checks"]["broker"]["detail"]


def test_a_fresh_heartbeat_is_reported(client):
    Heartbeat.objects.create(name=NAME, seen_at=timezone.now(), hostname="w1")

    check = client.get("/health/").json()["checks"]["beat_heartbeat"]

    assert check["ok"] is True and "w1" in check["detail"]


def test_only_get(client):
    assert client.post("/health/").status_code == 405
