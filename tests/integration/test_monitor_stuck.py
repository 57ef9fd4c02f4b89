"""monitor_validation against the real Redis broker (TEST_BROKER_URL) with no worker:
`queue_depth` is the number of messages waiting in the maintenance queue, counted over
every priority level, and reading it changes nothing."""

import json
from io import StringIO

import pytest
from celery import current_app
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from maintenance.engine.enqueue import bounded_connection
from maintenance.heartbeat import NAME
from maintenance.models import Heartbeat
from maintenance.observability import queue

pytestmark = pytest.mark.django_db
# kombu's Redis transport keeps each priority level of a queue in a list of its own.
PRIORITY_SEP = "\x06\x16"


@pytest.fixture
def empty_queue(real_services, broker_queue):
    """The maintenance queue of the test broker, empty before and after, priority lists
    included (broker_queue empties the plain list only). Returns its Redis client."""
    name = settings.MAINTENANCE_QUEUE

    def clear() -> None:
        keys = [name, *broker_queue.scan_iter(match=f"{name}{PRIORITY_SEP}*")]
        broker_queue.delete(*keys)

    clear()
    yield broker_queue
    clear()


def publish(count: int, priority: int | None = None) -> None:
    """`count` heartbeat messages on the maintenance queue, as beat would send them."""
    options = {} if priority is None else {"priority": priority}
    with bounded_connection() as connection:
        for _ in range(count):
            current_app.send_task(
                "maintenance.heartbeat",
                queue=settings.MAINTENANCE_QUEUE,
                connection=connection,
                ignore_result=True,
                **options,
            )


def monitor() -> tuple[int, dict]:
    out = StringIO()
    try:
        call_command("monitor_validation", "--json", stdout=out)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, json.loads(out.getvalue())


def waiting(redis) -> int:
    name = settings.MAINTENANCE_QUEUE
    keys = [name, *redis.scan_iter(match=f"{name}{PRIORITY_SEP}*")]
    return sum(redis.llen(key) for key in keys)


@pytest.mark.parametrize("plain, urgent", [(0, 0), (1, 0), (5, 3)])
def test_queue_depth_is_the_number_of_messages_waiting(empty_queue, plain, urgent):
    Heartbeat.objects.create(name=NAME, seen_at=timezone.now(), hostname="worker-1")
    publish(plain)
    publish(urgent, priority=9)
    assert waiting(empty_queue) == plain + urgent  # what Redis itself holds

    code, report = monitor()

    assert report["queue_depth"] == plain + urgent == queue.queue_depth()
    broker = next(c for c in report["checks"] if c["name"] == "broker")
    assert broker["status"] == "OK"
    assert broker["detail"].endswith(f"answers; {plain + urgent:,} waiting in queue maintenance")
    # A passive declare: the messages are still there, and no empty queue was made.
    assert waiting(empty_queue) == plain + urgent
    assert empty_queue.exists(settings.MAINTENANCE_QUEUE) == (plain > 0)
    assert (report["health"], code) == ("OK", 0)
