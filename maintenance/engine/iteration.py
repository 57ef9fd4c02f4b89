"""What an operation walks, and the base class that owns walking it.

An operation declares two things: `walk(ctx)`, an enumerator of its rows (a keyset walk
over a queryset, several walks one after another, or its own enumerator, like the lines
of an import file), and `process(ctx, batch)`, what it does to one batch. The base class
owns the rest: the position, when the walk is done, the count for progress. The runner
owns transactions, leases and state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from django.db.models import Max, Min, QuerySet

# An id range, both ends included; None: open at that end.
Range = tuple[int | None, int | None]
# The whole key space of a walk: no bounds.
WHOLE: Range = (None, None)


@dataclass(frozen=True)
class RunContext:
    """Everything a batch needs to know about its run, fixed for the whole run."""

    run_id: int | None
    params: dict
    prepared: dict  # values fixed at the run's start (a cutoff, a file's identity)
    dry_run: bool
    batch_size: int | None  # pinned by --batch-size; None: the runner adapts it
    # A partition's id range of each walk ({walk: [lower, upper]}); None: everything.
    bounds: dict | None = None


@dataclass
class Batch:
    """One batch of a walk: the items to process and where the walk stands after it."""

    items: list
    processed: int  # rows looked at (may exceed len(items): sparse walks skip clean rows)
    position: Any  # JSON: the walk resumes after this
    done: bool
    walk: str = ""  # which walk of a chain the batch belongs to


@dataclass
class FindingRecord:
    """One problem found in a batch; the runner stores it with the batch."""

    rule: str
    model: str
    object_id: int
    message: str
    fixed: bool = False
    before: dict | None = None
    after: dict | None = None
    also_written: dict | None = None  # {"before": ..., "after": ...} of bookkeeping columns


@dataclass
class Outcome:
    """What processing one batch did (in a dry run: would do)."""

    changed: int = 0
    changed_ids: list = field(default_factory=list)
    findings: list[FindingRecord] = field(default_factory=list)
    # The values every changed row was given (and had), where they are the same for all
    # of them: {"model": label, "before": {...}, "after": {...}}; a revert reads them.
    written: dict | None = None


@dataclass
class BatchResult:
    processed: int
    changed: int
    position: Any
    done: bool
    changed_ids: list = field(default_factory=list)
    findings: list[FindingRecord] = field(default_factory=list)
    written: dict | None = None


class Enumerator(Protocol):
    def batch_after(self, position: Any, size: int) -> Batch: ...

    def count_after(self, position: Any) -> int | None: ...


class Splittable(Enumerator, Protocol):
    """A walk over ids that partitions can share out: it says the id range of each of its
    walks, and gives the walk restricted to ranges."""

    def key_ranges(self) -> dict[str, Range]: ...

    def bounded(self, bounds: dict[str, Range]) -> Enumerator: ...


def within(queryset: QuerySet, bounds: Range | list | None) -> QuerySet:
    """`queryset` restricted to an id range (both ends included, None: open)."""
    lower, upper = bounds or WHOLE
    if lower is not None:
        queryset = queryset.filter(id__gte=lower)
    if upper is not None:
        queryset = queryset.filter(id__lte=upper)
    return queryset


def id_range(queryset: QuerySet) -> Range:
    found = queryset.aggregate(lower=Min("id"), upper=Max("id"))
    return found["lower"], found["upper"]


class KeysetWalk:
    """The ids of a queryset in id order, `size` at a time; the position is the last id.
    Keyset, never OFFSET: rows that leave the set (archived ones) shift nothing."""

    def __init__(self, queryset: QuerySet):
        self.queryset = queryset

    def _after(self, position):
        return self.queryset.filter(id__gt=position or 0)

    def batch_after(self, position, size):
        ids = list(self._after(position).order_by("id").values_list("id", flat=True)[:size])
        return Batch(
            items=ids,
            processed=len(ids),
            position=ids[-1] if ids else position,
            done=len(ids) < size,
        )

    def count_after(self, position):
        return self._after(position).count()

    def key_ranges(self):
        return {"": id_range(self.queryset)}

    def bounded(self, bounds):
        return KeysetWalk(within(self.queryset, bounds.get("")))


class ChainedWalk:
    """Named walks one after another. The position names the walk it is in
    ({"walk": name, "at": position}), so adding or reordering walks between a failure
    and its resume can never send the resume into the wrong one."""

    def __init__(self, walks: dict[str, Enumerator]):
        self.walks = walks
        self.names = list(walks)

    def _start(self, position):
        """(index of the current walk, its position)."""
        if isinstance(position, dict) and position.get("walk") in self.walks:
            return self.names.index(position["walk"]), position.get("at")
        # No position yet, or one from before positions were keyed (or of a walk this
        # run no longer has): start from the first walk; operations are idempotent.
        return 0, None

    def batch_after(self, position, size):
        index, at = self._start(position)
        while index < len(self.names):
            name = self.names[index]
            batch = self.walks[name].batch_after(at, size)
            if batch.processed or batch.items or not batch.done:
                last = index == len(self.names) - 1
                after = {"walk": name, "at": batch.position}
                if batch.done and not last:
                    after = {"walk": self.names[index + 1], "at": None}
                batch.position, batch.walk = after, name
                batch.done = batch.done and last
                return batch
            index, at = index + 1, None
        return Batch(items=[], processed=0, position=position, done=True)

    def count_after(self, position):
        index, at = self._start(position)
        counts = [
            self.walks[name].count_after(at if number == index else None)
            for number, name in enumerate(self.names[index:], start=index)
        ]
        return None if None in counts else sum(counts)

    def key_ranges(self):
        return {name: walk.key_ranges()[""] for name, walk in self.walks.items()}

    def bounded(self, bounds):
        return ChainedWalk(
            {name: walk.bounded({"": bounds.get(name)}) for name, walk in self.walks.items()}
        )
