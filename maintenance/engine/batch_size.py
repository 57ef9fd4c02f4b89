"""How many rows the next batch takes.

A fixed size is wrong for every table but one: 1,000 rows is 3 ms of one rule and a
second of another. Without `--batch-size`, the size follows the time a batch took so
that batches take at most MAINTENANCE_TARGET_BATCH_MS: the target is a ceiling (the
application waits behind a batch's row locks for as long as it lasts), so the size grows
only while batches take under half of it (at most doubling), shrinks at once when one
takes longer (at most to a quarter), and otherwise stays; always between MIN and MAX
rows. A timed-out batch halves it; a new walk (the next rule of a validation) starts
again from START, since what it costs per row is unknown. `--batch-size N` pins it.
"""

from __future__ import annotations

MIN = 100
MAX = 10_000
START = 1_000
# Grow or shrink towards this share of the target, a margin below the ceiling.
AIM = 0.8


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
        seconds = max(seconds, 1e-6)
        if seconds > self.target_s:
            factor = max(0.25, AIM * self.target_s / seconds)
        elif seconds < self.target_s / 2:
            factor = min(2.0, AIM * self.target_s / seconds)
        else:
            return
        self.size = _bounded(round(self.size * factor))

    def timed_out(self) -> None:
        """A batch of this size was rolled back by a timeout: take fewer rows."""
        if self.adaptive:
            self.size = _bounded(self.size // 2)

    def new_walk(self) -> None:
        """The next walk of a chain: its rows may cost anything, start afresh."""
        if self.adaptive:
            self.size = START


def _bounded(size: int) -> int:
    return max(MIN, min(MAX, size))
