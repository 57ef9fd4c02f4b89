"""recalculate_xp: set each character's xp to its ledger sum, in set-based batches.

It is the character_xp_mismatch rule, always repairing: each mismatch is a finding with
the old and the new value; a negative ledger sum leaves the character as it is."""

from maintenance.operations.base import Operation
from maintenance.operations.common import CHRONICLE_ID
from maintenance.operations.registry import register
from maintenance.operations.rule_walk import check_batch
from maintenance.operations.rules import RULES

XP_RULE = RULES["character_xp_mismatch"]


@register
class RecalculateXp(Operation):
    name = "recalculate_xp"
    description = "Recompute every character's xp from its XP ledger."
    parameters = (CHRONICLE_ID,)

    def count_remaining(self, params, context, position):
        after_id = (position or (0, 0))[1]
        return XP_RULE.scope(params["chronicle_id"]).filter(id__gt=after_id).count()

    def run_batch(self, params, context, position, batch_size, dry_run):
        return check_batch(
            [XP_RULE],
            chronicle_id=params["chronicle_id"],
            fix=True,
            position=position,
            batch_size=batch_size,
            dry_run=dry_run,
        )
