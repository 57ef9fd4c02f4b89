"""The maintenance operations: one module each, plain Python and ORM, no Celery.

Importing this package registers every operation."""

from maintenance.operations import archive_old_scenes  # noqa: F401
from maintenance.operations.registry import all_operations, get

__all__ = ["all_operations", "get"]
