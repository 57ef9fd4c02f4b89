"""How an operation is declared: its parameters, with types, defaults, help and
validation, and its batch logic. One declaration drives the CLI flags, the task kwargs
and the admin, so a parameter is validated in exactly one place: Parameter.clean()."""

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from maintenance.engine.iteration import (
    Batch,
    BatchResult,
    Enumerator,
    FindingRecord,
    Outcome,
    RunContext,
)

__all__ = [
    # the declarations
    "BATCH_SIZE",
    "COMMON_PARAMETERS",
    "DRY_RUN",
    "Operation",
    "Parameter",
    "ParameterError",
    # the engine's iteration types, which operations use with them
    "Batch",
    "BatchResult",
    "Enumerator",
    "FindingRecord",
    "Outcome",
    "RunContext",
]

# A whole number as people type it: ASCII digits only ("²" and "٣" pass str.isdigit()
# but int() refuses them).
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_BIGINT = 2**63 - 1


class ParameterError(ValueError):
    """Parameters that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # "int", "bool", "text" or "list"
    help: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple = ()
    exists: Any = None  # a callable(value) -> bool, for ids that must name a row
    required: bool = False
    check: Any = None  # a callable(value) raising ParameterError ("text" and "int")

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    @property
    def is_path(self) -> bool:
        """A file path: the command line makes it absolute where the command runs."""
        return self.kind == "text" and (self.name == "path" or self.name.endswith("_path"))

    def clean(self, value):
        """The value to use, or ParameterError. Accepts JSON values (task kwargs, the
        admin) and, for the CLI, their text form."""
        if value is None:
            if self.required:
                raise ParameterError(f"{self.name} is required")
            return self.default
        if self.kind == "bool":
            return self._clean_bool(value)
        if self.kind == "int":
            return self._clean_int(value)
        if self.kind == "text":
            return self._clean_text(value)
        return self._clean_list(value)

    def _clean_text(self, value):
        if not isinstance(value, str) or not value.strip():
            raise ParameterError(f"{self.name} must be a non-empty string, not {value!r}")
        if self.check is not None:
            self.check(value)
        return value

    def _clean_bool(self, value):
        if isinstance(value, bool):
            return value
        raise ParameterError(f"{self.name} must be true or false, not {value!r}")

    def _clean_int(self, value):
        if isinstance(value, str):
            # Spaces only around it: a tab, newline or escape is not part of a number.
            value = value.strip(" ")
            if not _WHOLE_NUMBER.fullmatch(value):
                raise ParameterError(f"{self.name} must be a whole number, not {value!r}")
            digits = value.lstrip("+-")
            if len(digits.lstrip("0")) > 19:  # int() refuses 4,300 digits; no column holds 20
                raise ParameterError(f"{self.name} is out of range: {digits[:25]}...")
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"{self.name} must be a whole number, not {value!r}")
        if abs(value) > _BIGINT:  # no database column holds it
            raise ParameterError(f"{self.name} is out of range: {value}")
        if self.minimum is not None and value < self.minimum:
            raise ParameterError(f"{self.name} must be at least {self.minimum}, not {value}")
        if self.maximum is not None and value > self.maximum:
            raise ParameterError(f"{self.name} must be at most {self.maximum}, not {value}")
        if self.exists is not None and not self.exists(value):
            raise ParameterError(f"{self.name} {value} does not exist")
        if self.check is not None:
            self.check(value)
        return value

    def _clean_list(self, value):
        if isinstance(value, str):
            value = [part.strip(" ") for part in value.split(",") if part.strip(" ")]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ParameterError(f"{self.name} must be a list of names, not {value!r}")
        if not value:
            # An explicitly empty list must not silently mean "all" (think --fix).
            known = f" (known: {', '.join(self.choices)})" if self.choices else ""
            raise ParameterError(f"{self.name} must name at least one{known}")
        unknown = [v for v in value if self.choices and v not in self.choices]
        if unknown:
            known = ", ".join(self.choices)
            raise ParameterError(f"{self.name}: unknown {', '.join(unknown)} (known: {known})")
        return sorted(set(value)) or self.default


# Options every run has, validated like any parameter.
DRY_RUN = Parameter("dry_run", "bool", "Report what would change; write no game data.", False)
BATCH_SIZE = Parameter(
    "batch_size",
    "int",
    "Rows per batch transaction (1..10000); unset, it adapts to MAINTENANCE_TARGET_BATCH_MS.",
    None,
    minimum=1,
    maximum=10000,
)
PARTITIONS = Parameter(
    "partitions",
    "int",
    "Split the run into this many id ranges, each its own task on any worker (1..64).",
    1,
    minimum=1,
    maximum=64,
)
COMMON_PARAMETERS = (DRY_RUN, BATCH_SIZE, PARTITIONS)
# Where nothing chose a size (a batch run outside the runner, an export).
DEFAULT_SIZE = 1000


class Cleaned(NamedTuple):
    """Validated parameters: the operation's own, and the options every run has."""

    params: dict
    dry_run: bool
    batch_size: int | None
    partitions: int


class Operation:
    """Base class of the operations. A subclass sets name, description and parameters,
    and declares what it walks (`walk`) and what it does to one batch (`process`); this
    class owns the position, done and the count, the runner owns transactions, leases
    and state. Operations never import Celery."""

    name = ""
    description = ""
    parameters: tuple = ()
    # Whether its walk can be shared out over partitions (a walk over ids can; the
    # lines of one file cannot).
    partitionable = False
    # Whether `maintenance_run revert` can undo its runs from what they recorded (each
    # fixed finding's before and after, each batch's written values).
    revertable = True
    # Whether a run that finds the same work (same parameters) succeeded after it was
    # triggered is skipped as coalesced into that run instead of doing it again.
    coalesces = True

    def rules_checked(self, params: dict) -> list[str]:
        """The integrity rules a run with `params` checks over its whole scope: its open
        findings are compared with those of the previous run that checked them."""
        return []

    def clean(self, raw):
        """Validate raw parameters (task kwargs, CLI options, admin JSON).

        Returns Cleaned, or raises ParameterError naming every problem at once."""
        if not isinstance(raw, dict):
            raise ParameterError(f"parameters must be a JSON object, not {raw!r}")
        declared = {p.name: p for p in (*self.parameters, *COMMON_PARAMETERS)}
        problems = [f"unknown parameter {name!r}" for name in raw if name not in declared]
        cleaned = {}
        for name, parameter in declared.items():
            try:
                cleaned[name] = parameter.clean(raw.get(name))
            except ParameterError as error:
                problems.append(str(error))
        if (cleaned.get("partitions") or 1) > 1 and not self.partitionable:
            problems.append(f"{self.name} cannot be split: partitions must be 1")
        if problems:
            raise ParameterError("; ".join(problems))
        dry_run = cleaned.pop("dry_run")
        batch_size = cleaned.pop("batch_size")
        partitions = cleaned.pop("partitions")
        return Cleaned(cleaned, dry_run, batch_size, partitions)

    def prepare(self, params: dict, now) -> dict:
        """Values fixed for the whole run (JSON), e.g. a cutoff; a resumed run reuses
        them, so it finishes exactly the work its first attempt started."""
        return {}

    def can_resume(self, params: dict, context: dict) -> bool:
        """Whether a checkpoint made with `context` still fits the input (e.g. the same
        file); when False, the runner starts afresh instead of resuming."""
        return True

    # --- what a subclass declares ---

    def walk(self, ctx: RunContext) -> Enumerator:
        """What the operation walks: a KeysetWalk over a queryset, a ChainedWalk, or an
        enumerator of its own."""
        raise NotImplementedError

    def process(self, ctx: RunContext, batch: Batch) -> Outcome:
        """What it does to one batch, inside the batch transaction; must write no game
        data when ctx.dry_run is true."""
        raise NotImplementedError

    # --- what the base class owns ---

    def walk_of(self, ctx: RunContext) -> Enumerator:
        """The walk, restricted to the partition's id ranges when ctx has them."""
        walk = self.walk(ctx)
        return walk if ctx.bounds is None else walk.bounded(ctx.bounds)

    def key_ranges(self, ctx: RunContext) -> dict:
        """The id range of each of its walks, for splitting a run into partitions."""
        return self.walk(ctx).key_ranges()

    def count_remaining(self, ctx: RunContext, position: Any) -> int | None:
        """How many rows are still to be looked at after `position`, for progress."""
        return self.walk_of(ctx).count_after(position)

    def run_batch(self, ctx: RunContext, position: Any, size: int | None = None) -> BatchResult:
        """The next batch of `size` (default: the run's pinned size) after `position`,
        processed."""
        batch = self.walk_of(ctx).batch_after(position, size or ctx.batch_size or DEFAULT_SIZE)
        outcome = self.process(ctx, batch) if batch.items else Outcome()
        return BatchResult(
            processed=batch.processed,
            changed=outcome.changed,
            position=batch.position,
            done=batch.done,
            changed_ids=outcome.changed_ids,
            findings=outcome.findings,
            written=outcome.written,
        )
