"""How many rows the next batch takes.

A fixed size is wrong for every table but one: 1,000 rows is 3 ms of one rule and a
second of another. Without `--batch-size`, the size follows the time a batch took
towards MAINTENANCE_TARGET_BATCH_MS, at most doubling or halving per batch so one odd
batch cannot swing it, and always between MIN and MAX rows. A timed-out batch halves
it. `--batch-size N` pins it.
"""

from __future__ import annotations

MIN = 100
MAX = 10_000
START = 1_000


class BatchSizer:
    def __init__(self, pinned: int | None, target_ms: int, start: int | None = None):
        self.pinned = pinned
        self.target_s = target_ms / 1000
        self.size = pinned if pinned is not None else _bounded(start or START)

    @property
    def adaptive(self) -> bool:
        return self.pinned is None

    def observe(self, seconds: float, processed: int) -> None:
        """Learn from a committed batch of the current size that took `seconds`."""
        if not self.adaptive or processed <= 0:
            return
        factor = self.target_s / max(seconds, 1e-6)
        factor = min(2.0, max(0.5, factor))
        self.size = _bounded(round(self.size * factor))

    def timed_out(self) -> None:
        """A batch of this size was rolled back by a timeout: take fewer rows."""
        if self.adaptive:
            self.size = _bounded(self.size // 2)


def _bounded(size: int) -> int:
    return max(MIN, min(MAX, size))
