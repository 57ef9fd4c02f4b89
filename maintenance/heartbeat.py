"""The heartbeat: proof that beat, the broker and a worker are alive together."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from maintenance.models import Heartbeat

NAME = "beat-worker"


def record(hostname, periodic_task_name=""):
    Heartbeat.objects.update_or_create(
        name=NAME,
        defaults={
            "seen_at": timezone.now(),
            "hostname": hostname[:255],
            "periodic_task_name": periodic_task_name[:200],
        },
    )


def last():
    return Heartbeat.objects.filter(name=NAME).first()


def max_age():
    return timedelta(seconds=settings.MAINTENANCE_HEARTBEAT_STALE_SECONDS)


def is_stale(heartbeat, now=None):
    return heartbeat is None or heartbeat.seen_at < (now or timezone.now()) - max_age()
