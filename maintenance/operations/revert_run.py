"""revert_run: undo what a finished run changed, from what it recorded.

Each fixed finding's before-values go back, each archived scene's archived_at, each
recalculated xp (and a character's updated_at with them), but only where the row still
holds what the run wrote; any other row is a revert_conflict finding that says what it
holds now. Every restored row is a revert_restored finding with before and after, so a
revert is itself a run that can be reverted."""

from maintenance.engine.iteration import ChainedWalk
from maintenance.models import Finding
from maintenance.operations import changes, recorded
from maintenance.operations.base import FindingRecord, Operation, Outcome, ParameterError
from maintenance.operations.registry import get, register

RESTORED = "revert_restored"
CONFLICT = "revert_conflict"


def _revertable(run_id: int) -> None:
    run = recorded.source_run(run_id)
    if run.dry_run:
        raise ParameterError(
            f"run #{run.pk} is a dry run: it changed nothing to revert "
            f"(apply its plan with: manage.py maintenance_run apply {run.pk})"
        )
    try:
        operation = get(run.operation)
    except LookupError:
        raise ParameterError(
            f"run #{run.pk} is of an unknown operation {run.operation!r}"
        ) from None
    if not operation.revertable:
        raise ParameterError(
            f"run #{run.pk} is {run.operation}, which cannot be reverted (undo it by hand)"
        )
    recorded.refuse_unless_finished(run, "reverted")
    if not run.changed:
        raise ParameterError(f"run #{run.pk} changed nothing: there is nothing to revert")
    recorded.refuse_if_done_by(run, RevertRun.name, "reverted")


@register
class RevertRun(Operation):
    name = "revert_run"
    description = "Undo what a finished run changed, where the rows still hold what it wrote."
    parameters = (recorded.run_id_parameter("The run to revert.", _revertable),)

    def walk(self, ctx):
        chain = recorded.chain_of(ctx.params["run_id"])
        return ChainedWalk(
            {
                # Newest first: a row fixed twice gets its earlier values back last.
                "fixes": recorded.FindingsWalk(recorded.fixes_of(chain), newest_first=True),
                "batches": recorded.BatchIdsWalk(recorded.batches_of(chain)),
            }
        )

    def process(self, ctx, batch):
        source = ctx.params["run_id"]
        if batch.walk == "fixes":
            undo = [recorded.undo_of(finding) for finding in batch.items]
            unknown = []
        else:
            label = f"batch of run #{source}"
            undo, unknown = [], []
            for object_id, written in batch.items:
                change = recorded.undo_of_batch_id(object_id, written, label)
                (undo.append(change) if change else unknown.append(object_id))
        planned = _planned_earlier(ctx.run_id, undo) if ctx.dry_run else None
        done, conflicts = changes.make(undo, ctx.dry_run, planned)
        findings = [restored(item, source, ctx.dry_run) for item in done]
        findings += [conflict(item, source) for item in conflicts]
        findings += [unrecorded(object_id, source) for object_id in unknown]
        return Outcome(
            changed=len(done),
            changed_ids=sorted({item.change.object_id for item in done}),
            findings=findings,
        )


def _planned_earlier(run_id: int | None, undo: list[changes.Change]) -> changes.Planned:
    """What this dry run's earlier batches would have restored on the rows of this one
    (a row fixed by several rules has its fixes in several batches), in their order."""
    planned: changes.Planned = {}
    ids = {change.object_id for change in undo}
    earlier = Finding.objects.filter(run_id=run_id, rule=RESTORED, object_id__in=ids)
    for model, object_id, after in earlier.order_by("id").values_list(
        "model", "object_id", "after"
    ):
        planned.setdefault((model, object_id), {}).update(after or {})
    return planned


def restored(item: changes.Written, source: int, dry_run: bool) -> FindingRecord:
    change = item.change
    verb = "would restore" if dry_run else "restored"
    return FindingRecord(
        rule=RESTORED,
        model=change.model,
        object_id=change.object_id,
        message=f"{verb} what run #{source} changed ({change.source}): "
        f"{changes.describe(change.write)}",
        fixed=not dry_run,
        before=item.held,
        after=change.write,
    )


def conflict(item: changes.Conflict, source: int) -> FindingRecord:
    change = item.change
    return FindingRecord(
        rule=CONFLICT,
        model=change.model,
        object_id=change.object_id,
        message=f"changed since run #{source} ({change.source}): it holds "
        f"{changes.describe(item.holds)}, run #{source} wrote "
        f"{changes.describe(change.expect)}; left as it is",
        before=item.holds,
    )


def unrecorded(object_id: int, source: int) -> FindingRecord:
    return FindingRecord(
        rule=CONFLICT,
        model="chronicles.Scene",
        object_id=object_id,
        message=f"run #{source} archived it before runs recorded what they wrote; "
        "left as it is (clear archived_at by hand if it should not be archived)",
    )
