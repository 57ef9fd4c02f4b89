"""archive_old_scenes: set archived_at on finished, unarchived scenes whose activity
time is older than the cutoff. An unfinished scene is never archived."""

from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef
from django.utils import timezone

from chronicles.models import Post, Scene, scene_activity_time
from maintenance.engine.iteration import KeysetWalk
from maintenance.operations.base import Operation, Outcome, Parameter
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

    def candidates(self, params, context):
        """Finished, unarchived scenes whose last activity is before the cutoff: cheap to
        walk (the partial index plus one column), a superset of what the rule archives."""
        cutoff = datetime.fromisoformat(context["cutoff"])
        scenes = (
            Scene.objects.filter(finished=True, archived_at__isnull=True)
            .alias(activity=scene_activity_time())
            .filter(activity__lt=cutoff)
        )
        if params["chronicle_id"] is not None:
            scenes = scenes.filter(chronicle_id=params["chronicle_id"])
        return scenes

    def eligible(self, params, context):
        """The scenes the rule archives: candidates with no post since the cutoff either
        (a post counts as activity even where last_activity_at lags behind). Checked
        inside the UPDATE, so a scene that became active since its batch was selected
        stays; a probe per row of the batch, never a scan of all recent posts."""
        cutoff = datetime.fromisoformat(context["cutoff"])
        recent_post = Post.objects.filter(scene=OuterRef("pk"), created_at__gte=cutoff)
        return self.candidates(params, context).exclude(Exists(recent_post))

    def walk(self, ctx):
        return KeysetWalk(self.candidates(ctx.params, ctx.prepared))

    def process(self, ctx, batch):
        ids = batch.items
        if ctx.dry_run:
            changed_ids = self.would_archive(ctx.params, ctx.prepared, ids)
        else:
            changed_ids = self.archive(ctx.params, ctx.prepared, ids)
        return Outcome(changed=len(changed_ids), changed_ids=changed_ids)

    def archive(self, params, context, ids):
        """Archive those of `ids` the rule still applies to; return the ids archived."""
        stamp = timezone.now()
        # The batch's id range holds exactly its candidates; a range scan is cheaper than
        # looking up a thousand ids one by one.
        batch = self.eligible(params, context).filter(id__gte=ids[0], id__lte=ids[-1])
        batch.update(archived_at=stamp)
        # Read back what was archived: the re-check may have left some out, and a scene
        # that became a candidate since the selection may have come in.
        return list(
            Scene.objects.filter(id__gte=ids[0], id__lte=ids[-1], archived_at=stamp)
            .order_by("id")
            .values_list("id", flat=True)
        )

    def would_archive(self, params, context, ids):
        return list(
            self.eligible(params, context)
            .filter(id__in=ids)
            .order_by("id")
            .values_list("id", flat=True)
        )
