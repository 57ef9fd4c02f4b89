"""Small builders for hand-made game data in tests."""

from datetime import timedelta

from django.utils import timezone

from chronicles.models import Chronicle, Post, Scene


def days_ago(days, now=None):
    return (now or timezone.now()) - timedelta(days=days)


def chronicle(name="Chicago by Night"):
    return Chronicle.objects.create(name=name)


def scene(
    *,
    created_days_ago=200,
    active_days_ago=None,
    finished=True,
    archived=False,
    chronicle=None,
    name="scene",
):
    return Scene.objects.create(
        name=name,
        chronicle=chronicle,
        finished=finished,
        created_at=days_ago(created_days_ago),
        last_activity_at=None if active_days_ago is None else days_ago(active_days_ago),
        archived_at=days_ago(1) if archived else None,
    )


def bulk_post(scene, *, days_ago_=0):
    """A post inserted the way a bulk import would: without touching the scene."""
    return Post.objects.bulk_create(
        [Post(scene=scene, message="late reply", created_at=days_ago(days_ago_))]
    )[0]


def task_summary(result):
    """The run summary of an applied task: its result, or, when the run failed (the task
    is then a FAILURE, as in Flower), the summary its RunFailed carries."""
    if result.failed():
        return result.result.summary
    return result.get()
