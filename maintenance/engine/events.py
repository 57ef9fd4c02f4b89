"""What the engine did to a run, as one INFO line an operator can follow in the worker's
log: `run #12 validate_data_integrity skipped: ...`, one for each skip, coalesce,
takeover, abandon, resume, slice and lease wait."""

from __future__ import annotations

import logging

from maintenance.models import LeasedWork, RunPartition

logger = logging.getLogger("maintenance.events")


def label(unit: LeasedWork) -> str:
    if isinstance(unit, RunPartition):
        return f"run #{unit.run_id} partition {unit.number} {unit.run.operation}"
    return f"run #{unit.pk} {unit.operation}"


def note(unit: LeasedWork, event: str, detail: str = "") -> None:
    logger.info("%s %s%s", label(unit), event, f": {detail}" if detail else "")
