"""apply_run: carry out exactly what a finished dry run planned, as a run of its own.

A planned fix is made only where its rule still finds the row broken in the same way
(the same values before, the same repair); an archive only for the scenes the dry run
listed that are still eligible under its cutoff; a planned revert only where the row
still holds what the dry run saw. Everything else is an apply_conflict finding, not a
change. What the apply writes is recorded like the run it previews, so it can be
reverted."""

from django.db.models import QuerySet
from django.utils import timezone

from maintenance.models import RunBatch
from maintenance.operations import changes, recorded
from maintenance.operations.archive_old_scenes import archived_with
from maintenance.operations.base import FindingRecord, Operation, Outcome, ParameterError
from maintenance.operations.registry import get, register
from maintenance.operations.revert_run import RESTORED, restored
from maintenance.operations.rule_walk import check_rows
from maintenance.operations.rules import RULES

CONFLICT = "apply_conflict"
# The operations whose dry runs plan changes that can be applied.
ARCHIVE, VALIDATE, XP, REVERT = (
    "archive_old_scenes",
    "validate_data_integrity",
    "recalculate_xp",
    "revert_run",
)
APPLICABLE = (ARCHIVE, VALIDATE, XP, REVERT)


def _applicable(run_id: int) -> None:
    run = recorded.source_run(run_id)
    if not run.dry_run:
        raise ParameterError(f"run #{run.pk} is not a dry run: it has no plan to apply")
    if run.operation not in APPLICABLE:
        raise ParameterError(f"run #{run.pk} is {run.operation}, whose plans cannot be applied")
    recorded.refuse_unless_finished(run, "applied")
    if run.status != "succeeded":
        raise ParameterError(
            f"run #{run.pk} is {run.status}: only a complete dry run's plan can be applied"
        )
    if not run.changed:
        raise ParameterError(f"run #{run.pk} planned no changes: nothing to apply")
    recorded.refuse_if_done_by(run, ApplyRun.name, "applied")


def plan_of(source) -> QuerySet:
    """The planned changes of a dry run other than an archive: its would-be fixes (a
    dry-run revert's, its would-be restores)."""
    planned = recorded.planned_fixes_of(recorded.chain_of(source.pk))
    return planned.filter(rule=RESTORED) if source.operation == REVERT else planned


@register
class ApplyRun(Operation):
    name = "apply_run"
    description = "Apply exactly what a finished dry run planned, where rows have not changed."
    parameters = (recorded.run_id_parameter("The dry run whose plan to apply.", _applicable),)

    def walk(self, ctx):
        source = recorded.source_run(ctx.params["run_id"])
        chain = recorded.chain_of(source.pk)
        if source.operation == ARCHIVE:
            return recorded.BatchIdsWalk(RunBatch.objects.filter(run_id__in=chain))
        return recorded.FindingsWalk(plan_of(source))

    def process(self, ctx, batch):
        source = recorded.source_run(ctx.params["run_id"])
        if source.operation == ARCHIVE:
            return _archive(source, [object_id for object_id, _ in batch.items])
        if source.operation == REVERT:
            return _redo(source, batch.items)
        return _fixes(source, batch.items)


def _archive(source, ids: list[int]) -> Outcome:
    archive = get(ARCHIVE)
    stamp = timezone.now()
    context = source.checkpoint["context"]
    archived = archive.archive(source.params, context, ids, stamp, exactly=True)
    left = sorted(set(ids) - set(archived))
    findings = [
        FindingRecord(
            rule=CONFLICT,
            model="chronicles.Scene",
            object_id=object_id,
            message=f"no longer eligible for archiving under dry run #{source.pk}'s cutoff "
            f"({context['cutoff']}): it changed since; left as it is",
        )
        for object_id in left
    ]
    return Outcome(
        changed=len(archived),
        changed_ids=archived,
        findings=findings,
        written=archived_with(stamp) if archived else None,
    )


def _redo(source, planned: list[dict]) -> Outcome:
    done, conflicts = changes.make([recorded.redo_of(p) for p in planned], dry_run=False)
    findings = [restored(item, source.params["run_id"], dry_run=False) for item in done]
    findings += [
        FindingRecord(
            rule=CONFLICT,
            model=item.change.model,
            object_id=item.change.object_id,
            message=f"changed since dry run #{source.pk}: it holds "
            f"{changes.describe(item.holds)}, the dry run saw "
            f"{changes.describe(item.change.expect)}; left as it is",
            before=item.holds,
        )
        for item in conflicts
    ]
    return Outcome(
        changed=len(done),
        changed_ids=sorted({item.change.object_id for item in done}),
        findings=findings,
    )


def _fixes(source, planned: list[dict]) -> Outcome:
    """Each rule's planned fixes, made by the rule itself where it still plans exactly
    the same repair of the same values."""
    chronicle_id = source.params.get("chronicle_id")
    outcome = Outcome()
    by_rule: dict[str, list[dict]] = {}
    for finding in planned:
        by_rule.setdefault(finding["rule"], []).append(finding)
    for code, findings in by_rule.items():
        rule = RULES.get(code)
        fresh = {}
        if rule is not None:
            rows = rule.broken(
                rule.scope(chronicle_id).filter(pk__in=[f["object_id"] for f in findings])
            )
            fresh = {row["id"]: row for row in rows.values(*rule.values())}
        same = []
        for finding in findings:
            row = fresh.get(finding["object_id"])
            plan = rule.plan(row) if row is not None else None
            if (
                plan
                and plan.before == finding["before"]
                and changes.values_as_json(plan.after or {}) == finding["after"]
            ):
                same.append(row)
            else:
                outcome.findings.append(_changed_since(source, finding, plan))
        made = (
            check_rows(rule, same, chronicle_id=chronicle_id, fix=True, dry_run=False)
            if same
            else Outcome()
        )
        outcome.changed += made.changed
        outcome.changed_ids += made.changed_ids
        outcome.findings += made.findings
    outcome.changed_ids.sort()
    return outcome


def _changed_since(source, finding: dict, plan) -> FindingRecord:
    if plan is None:
        now = "its rule no longer finds it broken"
    else:
        now = (
            f"its rule now plans {changes.describe(changes.values_as_json(plan.after or {}))} from "
            + (changes.describe(plan.before))
        )
    return FindingRecord(
        rule=CONFLICT,
        model=finding["model"],
        object_id=finding["object_id"],
        message=f"{finding['rule']}: changed since dry run #{source.pk}, which planned "
        f"{changes.describe(finding['after'])} from {changes.describe(finding['before'])}; "
        f"{now}; left as it is",
        before=finding["before"],
    )
