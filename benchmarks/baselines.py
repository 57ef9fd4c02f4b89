"""What the operations are measured against, on an identical copy of the data:

- the lower bound: the same change as one set-based SQL statement;
- the naive per-row pattern of the users' command guide: OFFSET pagination over the
  matching rows with a save() per object (it also skips rows, since the set shrinks).
"""

import time
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Sum
from django.utils import timezone

from chronicles.models import Character, Post, Scene, scene_activity_time

ARCHIVE_SQL = """
UPDATE chronicles_scene s SET archived_at = %(now)s
WHERE s.finished AND s.archived_at IS NULL
  AND COALESCE(s.last_activity_at, s.created_at) < %(cutoff)s
  AND NOT EXISTS (SELECT 1 FROM chronicles_post p
                  WHERE p.scene_id = s.id AND p.created_at >= %(cutoff)s)
"""

# The full rule: a character with no ledger entries sums to 0 too.
RECALCULATE_SQL = """
UPDATE chronicles_character c SET xp = ledger.total, updated_at = %(now)s
FROM (SELECT c2.id, COALESCE(SUM(x.amount), 0) AS total
      FROM chronicles_character c2
      LEFT JOIN chronicles_xpentry x ON x.character_id = c2.id GROUP BY c2.id) ledger
WHERE ledger.id = c.id AND c.xp <> ledger.total AND ledger.total >= 0
"""

# Each integrity rule's detection as one bare query over the whole table.
RULE_SQL = {
    "character_without_owner": "SELECT id FROM chronicles_character WHERE owner_id IS NULL",
    "character_trait_out_of_range": """
        SELECT id FROM chronicles_character
        WHERE willpower NOT BETWEEN 1 AND 10 OR temporary_willpower < 0
           OR temporary_willpower > willpower OR age < 0 OR age > 5000""",
    "character_xp_mismatch": """
        SELECT c.id FROM chronicles_character c
        LEFT JOIN (SELECT character_id, SUM(amount) AS total FROM chronicles_xpentry
                   GROUP BY character_id) l ON l.character_id = c.id
        WHERE c.xp <> COALESCE(l.total, 0)""",
    "scene_without_chronicle": "SELECT id FROM chronicles_scene WHERE chronicle_id IS NULL",
    "scene_archived_unfinished": """
        SELECT id FROM chronicles_scene WHERE archived_at IS NOT NULL AND NOT finished""",
    "scene_activity_stale": """
        SELECT s.id FROM chronicles_scene s
        JOIN (SELECT scene_id, MAX(created_at) AS newest FROM chronicles_post
              WHERE scene_id IS NOT NULL GROUP BY scene_id) p ON p.scene_id = s.id
        WHERE s.last_activity_at IS DISTINCT FROM p.newest""",
    "post_without_scene": "SELECT id FROM chronicles_post WHERE scene_id IS NULL",
}


def timed(action):
    started = time.perf_counter()
    rows = action()
    return rows, time.perf_counter() - started


def archive_sql():
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(ARCHIVE_SQL, {"now": now, "cutoff": now - timedelta(days=90)})
        return cursor.rowcount


def recalculate_sql():
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(RECALCULATE_SQL, {"now": timezone.now()})
        return cursor.rowcount


def validate_sql():
    found = 0
    with connection.cursor() as cursor:
        for sql in RULE_SQL.values():
            cursor.execute(sql)
            found += len(cursor.fetchall())
    return found


def _offset_pages(queryset, size=1000):
    """The guide's batch iterator: OFFSET pages over a set that may shrink."""
    start = 0
    while batch := list(queryset[start : start + size]):
        yield batch
        start += size


def archive_naive():
    now = timezone.now()
    cutoff = now - timedelta(days=90)
    recent = Post.objects.filter(scene=OuterRef("pk"), created_at__gte=cutoff)
    eligible = (
        Scene.objects.filter(finished=True, archived_at__isnull=True)
        .alias(activity=scene_activity_time())
        .filter(activity__lt=cutoff)
        .exclude(Exists(recent))
        .order_by("id")
    )
    changed = 0
    for batch in _offset_pages(eligible):
        with transaction.atomic():
            for scene in batch:
                scene.archived_at = now
                scene.save(update_fields=["archived_at"])
                changed += 1
    return changed


def recalculate_naive():
    changed = 0
    for batch in _offset_pages(Character.objects.order_by("id")):
        with transaction.atomic():
            for character in batch:
                total = character.xp_entries.aggregate(total=Sum("amount"))["total"] or 0
                if total != character.xp and total >= 0:
                    character.xp = total
                    character.save(update_fields=["xp"])
                    changed += 1
    return changed


SQL = {
    "archive_old_scenes": archive_sql,
    "recalculate_xp": recalculate_sql,
    "validate_data_integrity": validate_sql,
}
NAIVE = {"archive_old_scenes": archive_naive, "recalculate_xp": recalculate_naive}
