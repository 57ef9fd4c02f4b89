"""archive_old_scenes: set archived_at on finished, unarchived scenes whose activity
time is older than the cutoff. An unfinished scene is never archived."""

from datetime import datetime

from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from chronicles.models import Post, Scene, scene_activity_time
from maintenance.engine.iteration import KeysetWalk
from maintenance.operations.base import Operation, Outcome
from maintenance.operations.common import CHRONICLE_ID, cutoff_of, older_than_days
from maintenance.operations.registry import register


@register
class ArchiveOldScenes(Operation):
    name = "archive_old_scenes"
    partitionable = True
    description = "Archive finished scenes with no activity for older_than_days days."
    parameters = (
        older_than_days("Archive scenes with no activity for this many days (default 90)."),
        CHRONICLE_ID,
    )

    def prepare(self, params, now):
        return {"cutoff": cutoff_of(params, now).isoformat()}

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
        stays. Asked as "its newest post is older, or it has none": one index probe per
        row of the batch. (NOT EXISTS would let the planner hash every recent post
        instead, which it does when its statistics still count scenes already archived.)"""
        cutoff = datetime.fromisoformat(context["cutoff"])
        newest_post = Post.objects.filter(scene=OuterRef("pk")).order_by("-created_at")
        return (
            self.candidates(params, context)
            .alias(newest_post=Subquery(newest_post.values("created_at")[:1]))
            .filter(Q(newest_post__lt=cutoff) | Q(newest_post__isnull=True))
        )

    def walk(self, ctx):
        return KeysetWalk(self.candidates(ctx.params, ctx.prepared))

    def process(self, ctx, batch):
        ids = batch.items
        if ctx.dry_run:
            changed_ids = self.would_archive(ctx.params, ctx.prepared, ids)
            return Outcome(changed=len(changed_ids), changed_ids=changed_ids)
        stamp = timezone.now()
        changed_ids = self.archive(ctx.params, ctx.prepared, ids, stamp)
        return Outcome(
            changed=len(changed_ids), changed_ids=changed_ids, written=archived_with(stamp)
        )

    def archive(self, params, context, ids, stamp=None, exactly=False):
        """Archive those of `ids` the rule still applies to; return the ids archived.
        The batch's id range is taken unless `exactly` (only these ids: a reviewed
        plan)."""
        stamp = stamp or timezone.now()
        rows = Q(id__in=ids) if exactly else _the_batch(ids)
        self.eligible(params, context).filter(rows).update(archived_at=stamp)
        # Read back what was archived: the re-check may have left some out, and a scene
        # that became a candidate since the selection may have come in.
        return list(
            Scene.objects.filter(rows, archived_at=stamp)
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


def archived_with(stamp) -> dict:
    """What an archiving batch wrote to each of its scenes (RunBatch.written)."""
    return {
        "model": Scene._meta.label,
        "before": {"archived_at": None},
        "after": {"archived_at": stamp.isoformat()},
    }


# Candidates are a third of the scenes or more while there is work; a batch whose ids
# spread over more than this many times their number is sparse.
SPARSE_FACTOR = 8


def _the_batch(ids: list[int]) -> Q:
    """The rows of a batch of candidate ids (in id order). Its id range holds exactly its
    candidates, and a range scan of the partial index is cheaper than looking up
    thousands of ids one by one; but when a few candidates are left spread over the
    table (those a recent post keeps), the range would cover every unarchived scene, so
    they are looked up by id."""
    if ids[-1] - ids[0] < SPARSE_FACTOR * len(ids):
        return Q(id__gte=ids[0], id__lte=ids[-1])
    return Q(id__in=ids)
