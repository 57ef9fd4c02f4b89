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
