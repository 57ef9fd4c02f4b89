"""Archive 100,000 scenes through a real worker, change some by hand, revert through the
worker: every other scene is exactly as before the archive, each changed one is a
revert_conflict. PostgreSQL, Redis and a real `celery worker` process."""

import json
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from chronicles.models import Scene
from maintenance.models import Finding, MaintenanceRun
from tests.integration.conftest import SCENES

pytestmark = pytest.mark.django_db(transaction=True)
HAND_CHANGED = 25


def scene_digest(exclude=()):
    """One hash of every scene row, all columns, in id order (except `exclude` ids)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT md5(string_agg(s::text, ',' ORDER BY s.id)) FROM chronicles_scene s "
            "WHERE NOT (s.id = ANY(%s))",
            [list(exclude)],
        )
        return cursor.fetchone()[0]


def command(*args):
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def wait_until_finished(run_id, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = MaintenanceRun.objects.get(pk=run_id)
        if run.is_finished:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run #{run_id} did not finish")


def test_archive_then_revert_100k_scenes_through_a_worker(celery_worker_process):
    old = timezone.now() - timedelta(days=400)
    Scene.objects.bulk_create(
        [Scene(name=f"s{i}", finished=True, created_at=old) for i in range(SCENES)],
        batch_size=10_000,
    )
    ids = list(Scene.objects.order_by("id").values_list("id", flat=True))
    unarchived, rearchived = ids[:HAND_CHANGED], ids[-HAND_CHANGED:]
    before = scene_digest(exclude=unarchived + rearchived)

    archive = command("run_maintenance", "archive_old_scenes", "--json")
    archive = wait_until_finished(archive["run_id"])
    assert archive.status == "succeeded" and archive.changed == SCENES
    Scene.objects.filter(pk__in=unarchived).update(archived_at=None)
    Scene.objects.filter(pk__in=rearchived).update(archived_at=timezone.now())

    revert = command("maintenance_run", "revert", str(archive.pk), "--json")
    revert = wait_until_finished(revert["run_id"])

    assert revert.status == "succeeded", revert.error
    assert revert.changed == SCENES - 2 * HAND_CHANGED
    assert revert.batches > 1 and revert.trigger == "cli"
    conflicts = set(
        Finding.objects.filter(run=revert, rule="revert_conflict").values_list(
            "object_id", flat=True
        )
    )
    assert conflicts == set(unarchived) | set(rearchived)
    assert scene_digest(exclude=unarchived + rearchived) == before
    assert not Scene.objects.filter(pk__in=rearchived, archived_at__isnull=True).exists()
    restored = Finding.objects.filter(run=revert, rule="revert_restored", fixed=True)
    assert restored.count() == revert.changed
