"""The maintenance operations: one module each, plain Python and ORM, no Celery.

Importing this package registers every operation."""

from maintenance.operations import (  # noqa: F401
    archive_old_scenes,
    import_characters,
    purge_history,
    recalculate_xp,
    validate_data_integrity,
)

# Runs that work on what other runs recorded (after those they refer to).
from maintenance.operations import apply_run, revert_run  # noqa: F401, E402  # isort: skip
from maintenance.operations.registry import UnknownOperation, all_operations, get

__all__ = ["UnknownOperation", "all_operations", "get"]
