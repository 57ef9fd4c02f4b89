"""Celery tasks of the maintenance service. Tasks stay thin: rules live in operations/."""

import socket

from celery import shared_task


@shared_task(name="maintenance.ping")
def ping():
    """Answer from a worker: proves the broker round trip and names who answered."""
    return {"pong": True, "hostname": socket.gethostname()}
