"""Parameters that several operations share."""

from chronicles.models import Chronicle
from maintenance.operations.base import Parameter

CHRONICLE_ID = Parameter(
    "chronicle_id",
    "int",
    "Only this chronicle (default: all).",
    minimum=1,
    exists=lambda pk: Chronicle.objects.filter(pk=pk).exists(),
)
