"""The database itself keeps the invariants it can."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from chronicles.models import Character, Scene, XPEntry, scene_activity_time

pytestmark = pytest.mark.django_db


def test_xp_cannot_go_negative():
    with pytest.raises(IntegrityError), transaction.atomic():
        Character.objects.create(name="Broke", xp=-1)


def test_status_must_be_known():
    with pytest.raises(IntegrityError), transaction.atomic():
        Character.objects.create(name="Odd", status="Zzz")


def test_a_ledger_entry_is_never_zero():
    character = Character.objects.create(name="Ledger")
    with pytest.raises(IntegrityError), transaction.atomic():
        XPEntry.objects.create(character=character, amount=0, kind="manual")


def test_a_character_with_a_ledger_cannot_be_deleted():
    from django.db.models import ProtectedError

    character = Character.objects.create(name="Kept", xp=3)
    XPEntry.objects.create(character=character, amount=3, kind="weekly")
    with pytest.raises(ProtectedError):
        character.delete()


def test_saving_a_character_moves_updated_at_even_with_update_fields():
    long_ago = timezone.now() - timezone.timedelta(days=400)
    character = Character.objects.create(name="Old", updated_at=long_ago)
    character.refresh_from_db()
    assert character.updated_at > long_ago
    Character.objects.filter(pk=character.pk).update(updated_at=long_ago)

    character.xp = 2
    character.save(update_fields=["xp"])

    character.refresh_from_db()
    assert character.xp == 2
    assert character.updated_at > long_ago


def test_a_scene_activity_time_falls_back_to_its_creation():
    created = timezone.now() - timezone.timedelta(days=10)
    active = timezone.now() - timezone.timedelta(days=1)
    quiet = Scene.objects.create(name="Quiet", created_at=created)
    busy = Scene.objects.create(name="Busy", created_at=created, last_activity_at=active)

    times = dict(
        Scene.objects.annotate(activity=scene_activity_time()).values_list("id", "activity")
    )

    assert times[quiet.id] == created
    assert times[busy.id] == active
