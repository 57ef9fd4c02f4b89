"""The admin is usable for every game-data model."""

import pytest
from django.urls import reverse

from chronicles.models import Character, Chronicle, Post, Scene, XPEntry
from chronicles.testdata.generator import Options, generate

pytestmark = pytest.mark.django_db

MODELS = [Chronicle, Character, Scene, Post, XPEntry]


@pytest.fixture
def data():
    generate(Options(seed=2, chronicles=2, characters=20, scenes=40))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_changelist_and_change_pages_load(admin_client, data, model):
    meta = model._meta
    listing = admin_client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
    assert listing.status_code == 200

    obj = model.objects.first()
    page = admin_client.get(
        reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    )
    assert page.status_code == 200


def test_the_xp_ledger_is_append_only_in_the_admin(admin_client, data):
    entry = XPEntry.objects.first()
    delete_url = reverse("admin:chronicles_xpentry_delete", args=[entry.pk])

    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert XPEntry.objects.filter(pk=entry.pk).exists()


def test_the_site_root_leads_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_run_history_is_listed_and_read_only(admin_client, data):
    from maintenance.engine.runner import execute
    from maintenance.engine.runs import create_run
    from maintenance.models import MaintenanceRun

    run = execute(create_run("archive_old_scenes", {"batch_size": 5}, trigger="cli"))
    listing = admin_client.get(reverse("admin:maintenance_maintenancerun_changelist"))
    page = admin_client.get(reverse("admin:maintenance_maintenancerun_change", args=[run.pk]))
    batches = admin_client.get(reverse("admin:maintenance_runbatch_changelist"))

    assert listing.status_code == page.status_code == batches.status_code == 200
    text = listing.content.decode()
    assert "archive_old_scenes" in text and "succeeded" in text
    assert f"{run.processed:,} / {run.total:,} (100%)" in text
    assert admin_client.get(reverse("admin:maintenance_maintenancerun_add")).status_code == 403
    delete_url = reverse("admin:maintenance_maintenancerun_delete", args=[run.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert MaintenanceRun.objects.filter(pk=run.pk).exists()
