"""archive_old_scenes: set archived_at on finished, unarchived scenes whose activity
time is older than the cutoff. An unfinished scene is never archived."""

from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef
from django.utils import timezone

from chronicles.models import Post, Scene, scene_activity_time
from maintenance.operations.base import BatchResult, Operation, Parameter
from maintenance.operations.common import CHRONICLE_ID
from maintenance.operations.registry import register


@register
class ArchiveOldScenes(Operation):
    name = "archive_old_scenes"
    description = "Archive finished scenes with no activity for older_than_days days."
    parameters = (
        Parameter(
            "older_than_days",
            "int",
            "Archive scenes with no activity for this many days (default 90).",
            default=90,
            minimum=1,
            maximum=36500,
        ),
        CHRONICLE_ID,
    )

    def prepare(self, params, now):
        cutoff = now - timedelta(days=params["older_than_days"])
        return {"cutoff": cutoff.isoformat()}

    def eligible(self, params, context):
        """The scenes the rule archives. Used to select a batch and again inside the
        UPDATE, so a scene that became active in between is left alone. A post newer
        than the cutoff counts as activity even where last_activity_at lags behind."""
        cutoff = datetime.fromisoformat(context["cutoff"])
        recent_post = Post.objects.filter(scene=OuterRef("pk"), created_at__gte=cutoff)
        scenes = (
            Scene.objects.filter(finished=True, archived_at__isnull=True)
            .alias(activity=scene_activity_time())
            .filter(activity__lt=cutoff)
            .exclude(Exists(recent_post))
        )
        if params["chronicle_id"] is not None:
            scenes = scenes.filter(chronicle_id=params["chronicle_id"])
        return scenes

    def count_remaining(self, params, context, position):
        return self.eligible(params, context).filter(id__gt=position or 0).count()

    def select_batch(self, params, context, position, batch_size):
        scenes = self.eligible(params, context).filter(id__gt=position or 0).order_by("id")
        return list(scenes.values_list("id", flat=True)[:batch_size])

    def archive(self, params, context, ids):
        """Archive those of `ids` that are still eligible; return the ids archived."""
        stamp = timezone.now()
        self.eligible(params, context).filter(id__in=ids).update(archived_at=stamp)
        return list(
            Scene.objects.filter(id__in=ids, archived_at=stamp)
            .order_by("id")
            .values_list("id", flat=True)
        )

    def run_batch(self, params, context, position, batch_size, dry_run):
        ids = self.select_batch(params, context, position, batch_size)
        if not ids:
            return BatchResult(processed=0, changed=0, position=position, done=True)
        changed_ids = ids if dry_run else self.archive(params, context, ids)
        return BatchResult(
            processed=len(ids),
            changed=len(changed_ids),
            changed_ids=changed_ids,
            position=ids[-1],
            done=len(ids) < batch_size,
        )
