"""recalculate_xp: set each character's xp to its ledger sum, in set-based batches.

It is the character_xp_mismatch rule, always repairing: each mismatch is a finding with
the old and the new value; a negative ledger sum leaves the character as it is."""

from maintenance.operations.base import Operation
from maintenance.operations.common import CHRONICLE_ID
from maintenance.operations.registry import register
from maintenance.operations.rule_walk import RuleWalk, check_rows
from maintenance.operations.rules import RULES

XP_RULE = RULES["character_xp_mismatch"]


@register
class RecalculateXp(Operation):
    name = "recalculate_xp"
    partitionable = True
    description = "Recompute every character's xp from its XP ledger."
    parameters = (CHRONICLE_ID,)

    def rules_checked(self, params):
        return [XP_RULE.code]

    def walk(self, ctx):
        return RuleWalk(XP_RULE, ctx.params["chronicle_id"])

    def process(self, ctx, batch):
        return check_rows(
            XP_RULE,
            batch.items,
            chronicle_id=ctx.params["chronicle_id"],
            fix=True,
            dry_run=ctx.dry_run,
        )
