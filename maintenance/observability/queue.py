"""The broker as monitoring sees it: does it answer, and how many messages wait in the
maintenance queue. Every step runs on a bounded connection (enqueue.BROKER_TIMEOUT per
step), so an unreachable or silent broker costs the monitor a few seconds, never a hang.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from kombu.utils.url import maybe_sanitize_url

from maintenance import oneline
from maintenance.engine.enqueue import BrokerUnavailable, bounded_connection, check_broker


@dataclass(frozen=True)
class BrokerState:
    url: str  # sanitised: never a password
    error: str | None = None  # why the broker did not answer; None: it answered
    depth: int | None = None  # messages waiting in the maintenance queue; None: unknown
    depth_error: str | None = None  # it answered, but the depth could not be read

    @property
    def reachable(self) -> bool:
        return self.error is None


def broker_url() -> str:
    return maybe_sanitize_url(current_app.conf.broker_url)


def _not_found(error: BaseException) -> bool:
    # Redis drops an empty list, and AMQP has no queue until a worker declares it:
    # either way nothing is waiting. kombu's virtual transports and py-amqp say it apart.
    return getattr(error, "reply_code", None) == 404 or "NOT_FOUND" in str(error)


def queue_depth(queue: str | None = None) -> int:
    """Messages waiting in `queue` (default MAINTENANCE_QUEUE), delivered-but-unacked
    ones not counted. A passive declare: it never creates the queue or changes it."""
    name = queue or settings.MAINTENANCE_QUEUE
    with bounded_connection() as connection:
        try:
            declared = connection.default_channel.queue_declare(queue=name, passive=True)
        except connection.channel_errors as error:
            if _not_found(error):
                return 0
            raise
        return int(declared.message_count)


def probe() -> BrokerState:
    """Whether the broker answers (enqueue.check_broker) and, if it does, the depth of
    the maintenance queue. Never raises."""
    try:
        check_broker()
    except BrokerUnavailable as error:
        return BrokerState(broker_url(), error=oneline.first_line(error))
    try:
        return BrokerState(broker_url(), depth=queue_depth())
    except Exception as error:  # kombu and each transport raise their own errors
        return BrokerState(broker_url(), depth_error=oneline.first_line(error))
