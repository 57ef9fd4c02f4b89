"""Findings over time: each run that checks integrity rules, compared with the previous
complete run that checked the same rule over the same rows.

A finding's fingerprint is (rule, model, object id). A problem is open after a run that
found it and did not fix it. For a run that succeeded, per rule it checked:
- new: found now, not open after the previous run (every finding, when there is none);
- resolved: open after the previous run, not open now (fixed, or gone);
- open: open now.
A finding open in the previous run keeps that run's "first seen" time. A run resumed
from failed attempts counts their findings too (it continues their walk)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from maintenance.engine.states import Status
from maintenance.models import Finding, MaintenanceRun

MAX_CHAIN = 1000  # a resume chain longer than this is bad data, not history
MAX_LOOKBACK = 500  # runs looked at for the previous one (other rules, other scopes)


@dataclass(frozen=True)
class Trend:
    new: int
    resolved: int
    open: int


def resume_chain(run: MaintenanceRun) -> list[int]:
    """The ids of `run` and the failed runs it resumed from, newest first."""
    ids, current = [], run.pk
    while current is not None and current not in ids and len(ids) < MAX_CHAIN:
        ids.append(current)
        current = (
            MaintenanceRun.objects.filter(pk=current)
            .values_list("resumed_from_id", flat=True)
            .first()
        )
    return ids


def _operations():
    """The registry, imported when first asked: operations (purge_history) use this
    module, so importing them here at the start would go round in a circle."""
    from maintenance import operations

    return operations


def rules_checked(run: MaintenanceRun) -> list[str]:
    operations = _operations()
    try:
        return operations.get(run.operation).rules_checked(run.params)
    except (operations.UnknownOperation, KeyError, TypeError):
        return []  # an operation no longer deployed, or params of another version


def _scope(run: MaintenanceRun):
    return (run.params or {}).get("chronicle_id")


def previous_run(run: MaintenanceRun, rule: str) -> MaintenanceRun | None:
    """The latest run before `run` that succeeded checking `rule` over the same rows."""
    candidates = MaintenanceRun.objects.filter(
        status=Status.SUCCEEDED, created_at__lte=run.created_at
    ).exclude(pk=run.pk)
    names = [op.name for op in _operations().all_operations() if _may_check(op, rule)]
    candidates = candidates.filter(operation__in=names).order_by("-created_at", "-pk")
    for candidate in candidates[:MAX_LOOKBACK].iterator(chunk_size=50):
        if candidate.created_at == run.created_at and candidate.pk > run.pk:
            continue
        if rule in rules_checked(candidate) and _scope(candidate) == _scope(run):
            return candidate
    return None


def _may_check(operation, rule: str) -> bool:
    """Whether runs of `operation` can check `rule` (with all their rules chosen)."""
    try:
        defaults = {p.name: p.default for p in operation.parameters}
        return rule in operation.rules_checked(defaults)
    except (KeyError, TypeError):
        return False


def findings_of(run_ids: list[int], rule: str) -> QuerySet:
    return Finding.objects.filter(run_id__in=run_ids, rule=rule).order_by()


def _fingerprints(findings: QuerySet) -> QuerySet:
    return findings.values("fingerprint").distinct()


def earlier_chains(run: MaintenanceRun, rules: list[str]) -> dict[str, list[int] | None]:
    """Per rule, the resume chain of the run `run` is compared with (None: no such run).
    Looked up once: both the counts and the first-seen times need it."""
    chains = {}
    for rule in rules:
        previous = previous_run(run, rule)
        chains[rule] = None if previous is None else resume_chain(previous)
    return chains


def trend(chain: list[int], earlier: dict[str, list[int] | None]) -> Trend:
    """New, resolved and open findings of the runs `chain`, per rule against `earlier`."""
    new = resolved = still_open = 0
    for rule, before in earlier.items():
        found = findings_of(chain, rule)
        open_now = found.filter(fixed=False)
        still_open += _fingerprints(open_now).count()
        if before is None:
            new += _fingerprints(found).count()
            continue
        open_before = findings_of(before, rule).filter(fixed=False)
        known = open_before.values("fingerprint")
        new += _fingerprints(found.exclude(fingerprint__in=known)).count()
        resolved += _fingerprints(
            open_before.exclude(fingerprint__in=open_now.values("fingerprint"))
        ).count()
    return Trend(new=new, resolved=resolved, open=still_open)


def carry_first_seen(chain: list[int], earlier: dict[str, list[int] | None]) -> None:
    """A finding open after the previous run was first seen when that one's was."""
    for rule, before in earlier.items():
        if before is None:
            continue
        first_seen = (
            findings_of(before, rule)
            .filter(fixed=False, fingerprint=OuterRef("fingerprint"))
            .order_by("first_seen_at")
            .values("first_seen_at")[:1]
        )
        findings_of(chain, rule).update(
            first_seen_at=Coalesce(Subquery(first_seen), F("first_seen_at"))
        )


def summarise(run_id: int) -> None:
    """Record a run's findings over time, once it has succeeded (idempotent)."""
    run = MaintenanceRun.objects.filter(pk=run_id, status=Status.SUCCEEDED).first()
    if run is None:
        return
    rules = rules_checked(run)
    if not rules:
        return
    chain, earlier = resume_chain(run), earlier_chains(run, rules)
    counts = trend(chain, earlier)
    carry_first_seen(chain, earlier)
    MaintenanceRun.objects.filter(pk=run.pk).update(
        findings_new=counts.new, findings_resolved=counts.resolved, findings_open=counts.open
    )
