"""Parameters that several operations share."""

from datetime import datetime, timedelta

from chronicles.models import Chronicle
from maintenance.operations.base import Parameter

CHRONICLE_ID = Parameter(
    "chronicle_id",
    "int",
    "Only this chronicle (default: all).",
    minimum=1,
    exists=lambda pk: Chronicle.objects.filter(pk=pk).exists(),
)


def older_than_days(help_text: str) -> Parameter:
    """An age in whole days (1..100 years, default 90) that a run turns into a cutoff."""
    return Parameter("older_than_days", "int", help_text, default=90, minimum=1, maximum=36500)


def cutoff_of(params: dict, now: datetime) -> datetime:
    """The moment `older_than_days` before `now`."""
    return now - timedelta(days=params["older_than_days"])
