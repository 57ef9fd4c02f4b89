"""Prometheus metrics of the maintenance service, computed from the database at scrape
time: every web process answers the same whichever worker ran the runs, and nothing is
lost when a process restarts.

A few aggregate queries per scrape: one over the runs grouped by operation and status,
the open findings of the latest complete validation (monitoring.open_findings), and the
heartbeat row. Every registered operation and every outcome appear, with 0 where there
were no runs, so that `increase()` sees the first failure of an operation too.

Semantics worth knowing (also in the HELP texts):
- `runs_total` counts finished runs by outcome (succeeded, failed, skipped, cancelled):
  runs still in flight move between statuses and would make a counter go down; they are
  in `running_runs` (runner active) instead.
- `rows_changed_total` counts real runs only: a dry run's "changed" is what it would
  change. `rows_processed_total` counts dry runs too: they read the rows all the same.
- `last_success_timestamp_seconds` is the newest finish of a successful real run, 0 when
  there is none (as in monitor_validation, a dry run proves nothing about the data).
- `heartbeat_age_seconds` is absent while no heartbeat was ever recorded: alert on
  `absent(...)` for that (an unknown age is not a number to compare).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from maintenance import heartbeat, monitoring, operations
from maintenance.engine.findings_over_time import rules_checked
from maintenance.engine.states import ACTIVE, FINISHED
from maintenance.models import MaintenanceRun
from maintenance.operations.rules import RULES

PREFIX = "tg_maintenance"
# Below Prometheus' default scrape_timeout (10s): a slow database makes a 503, not a
# web worker stuck behind a scrape that Prometheus has given up on.
STATEMENT_TIMEOUT_MS = 5000
OUTCOMES = tuple(str(status) for status in FINISHED)
ACTIVE_STATUSES = frozenset(str(status) for status in ACTIVE)


# (family, name after the prefix, OperationTotals attribute, HELP) of the metrics with
# one sample per operation.
PER_OPERATION = (
    (
        CounterMetricFamily,
        "rows_processed_total",
        "processed",
        "Rows looked at by maintenance runs, dry runs included.",
    ),
    (
        CounterMetricFamily,
        "rows_changed_total",
        "changed",
        "Rows changed by maintenance runs (dry runs change nothing and are not counted).",
    ),
    (
        CounterMetricFamily,
        "throttled_seconds_total",
        "throttled_s",
        "Seconds maintenance runs spent backing off for the database's sake.",
    ),
    (
        CounterMetricFamily,
        "findings_new_total",
        "findings_new",
        "Findings new against the previous complete run that checked the same rules.",
    ),
    (
        GaugeMetricFamily,
        "last_success_timestamp_seconds",
        "last_success",
        "Unix time the latest successful real (not dry) run finished; 0 if none did.",
    ),
    (
        GaugeMetricFamily,
        "running_runs",
        "running",
        "Runs a runner is working on now (running, pausing or cancelling).",
    ),
)


@dataclass
class OperationTotals:
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    processed: int = 0
    changed: int = 0
    throttled_s: float = 0.0
    findings_new: int = 0
    running: int = 0
    last_success: float = 0.0  # Unix seconds; 0: never


@dataclass(frozen=True)
class Snapshot:
    operations: dict[str, OperationTotals]
    open_findings: dict[str, int] | None  # None: no validation has completed yet
    heartbeat_age_s: float | None  # None: no heartbeat recorded yet


def _grouped_runs() -> Iterable[dict]:
    """One row per (operation, status) with the sums the metrics need."""
    real = Q(dry_run=False)
    return (
        MaintenanceRun.objects.order_by()  # the model's ordering would join the GROUP BY
        .values("operation", "status")
        .annotate(
            runs=Count("id"),
            processed=Sum("processed"),
            changed=Sum("changed", filter=real),
            throttled_s=Sum("throttled_s"),
            findings_new=Sum("findings_new"),
            last_finished=Max("finished_at", filter=real),
        )
    )


def _add_group(totals: OperationTotals, row: dict) -> None:
    status = row["status"]
    # PostgreSQL sums bigints as numeric (Decimal): whole numbers either way.
    totals.processed += int(row["processed"] or 0)
    totals.changed += int(row["changed"] or 0)
    totals.throttled_s += float(row["throttled_s"] or 0)
    totals.findings_new += int(row["findings_new"] or 0)
    if status in totals.finished:
        totals.finished[status] += row["runs"]
    if status in ACTIVE_STATUSES:
        totals.running += row["runs"]
    if status == MaintenanceRun.Status.SUCCEEDED and row["last_finished"] is not None:
        totals.last_success = max(totals.last_success, row["last_finished"].timestamp())


def operation_totals() -> dict[str, OperationTotals]:
    """Every registered operation, and any other name the history holds (a run that was
    rejected, an operation no longer deployed), sorted by name."""
    totals = {operation.name: OperationTotals() for operation in operations.all_operations()}
    for row in _grouped_runs():
        _add_group(totals.setdefault(row["operation"], OperationTotals()), row)
    return dict(sorted(totals.items()))


def open_findings_by_rule() -> dict[str, int] | None:
    """Open findings of the latest complete validation, 0 for each rule it checked and
    found clean; None before any validation completed (unknown is not zero)."""
    found = monitoring.open_findings()
    if found["run_id"] is None:
        return None
    latest = MaintenanceRun.objects.filter(pk=found["run_id"]).first()
    checked = rules_checked(latest) if latest is not None else []
    by_rule = {rule: 0 for rule in checked if rule in RULES}
    by_rule.update(found["by_rule"])
    return dict(sorted(by_rule.items()))


def heartbeat_age_seconds() -> float | None:
    last = heartbeat.last()
    if last is None:
        return None
    # A worker clock a little ahead makes a heartbeat "from the future": it is fresh.
    return max(0.0, (timezone.now() - last.seen_at).total_seconds())


def _bound_statements() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # set_config(..., true) is SET LOCAL: it ends with this transaction.
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true)", [f"{STATEMENT_TIMEOUT_MS}ms"]
            )


def read_snapshot() -> Snapshot:
    """Everything the metrics show, read in one transaction with bounded statements.
    Raises django.db.DatabaseError when the database cannot answer."""
    with transaction.atomic():
        _bound_statements()
        return Snapshot(
            operations=operation_totals(),
            open_findings=open_findings_by_rule(),
            heartbeat_age_s=heartbeat_age_seconds(),
        )


def _per_operation(snapshot: Snapshot) -> Iterable[Metric]:
    for kind, name, attribute, help_text in PER_OPERATION:
        family = kind(f"{PREFIX}_{name}", help_text, labels=["operation"])
        for operation, totals in snapshot.operations.items():
            family.add_metric([operation], getattr(totals, attribute))
        yield family


def _runs_total(snapshot: Snapshot) -> CounterMetricFamily:
    family = CounterMetricFamily(
        f"{PREFIX}_runs_total",
        "Finished maintenance runs by operation and outcome (succeeded, failed, skipped, "
        "cancelled); runs in flight are in tg_maintenance_running_runs.",
        labels=["operation", "status"],
    )
    for name, totals in snapshot.operations.items():
        for status, count in totals.finished.items():
            family.add_metric([name, status], count)
    return family


def _open_findings(snapshot: Snapshot) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        f"{PREFIX}_open_findings",
        "Unfixed findings of the latest complete validate_data_integrity run, by rule "
        "(no series before the first one completes).",
        labels=["rule"],
    )
    for rule, count in (snapshot.open_findings or {}).items():
        family.add_metric([rule], count)
    return family


def _heartbeat_age(snapshot: Snapshot) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        f"{PREFIX}_heartbeat_age_seconds",
        "Seconds since a worker last ran the heartbeat task that beat sends every minute "
        "(no sample while none was ever recorded).",
    )
    if snapshot.heartbeat_age_s is not None:
        family.add_metric([], snapshot.heartbeat_age_s)
    return family


def families(snapshot: Snapshot) -> list[Metric]:
    return [
        _runs_total(snapshot),
        *_per_operation(snapshot),
        _open_findings(snapshot),
        _heartbeat_age(snapshot),
    ]


class MaintenanceCollector(Collector):
    """Reads the database on every collect(), and only then: registering it (at import)
    touches nothing."""

    def collect(self) -> Iterable[Metric]:
        return families(read_snapshot())

    def describe(self) -> Iterable[Metric]:
        return []  # no names to reserve in our own registry, and no query at register()


# Our own registry: the global one would add this process's own metrics (GC, process),
# which differ from web process to web process.
REGISTRY = CollectorRegistry()
REGISTRY.register(MaintenanceCollector())


def render() -> bytes:
    """The Prometheus text exposition. Raises django.db.DatabaseError when the database
    cannot answer (nothing partial is ever returned)."""
    return generate_latest(REGISTRY)
