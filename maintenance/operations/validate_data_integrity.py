"""validate_data_integrity: run the integrity rules, record each problem as a finding,
and with fix repair what can be repaired without deleting anything."""

from maintenance.operations.base import Operation, Parameter
from maintenance.operations.common import CHRONICLE_ID
from maintenance.operations.registry import register
from maintenance.operations.rule_walk import check_rows, rules_walk
from maintenance.operations.rules import RULES


@register
class ValidateDataIntegrity(Operation):
    name = "validate_data_integrity"
    partitionable = True
    description = "Check the integrity rules; with --fix, repair what can be repaired."
    parameters = (
        Parameter(
            "fix",
            "bool",
            "Repair what can be repaired (never deletes), recording before and after.",
            default=False,
        ),
        Parameter(
            "rules",
            "list",
            "Comma-separated rule codes to run (default: all).",
            default=list(RULES),
            choices=tuple(RULES),
        ),
        CHRONICLE_ID,
    )

    def rules_checked(self, params):
        return list(params["rules"])

    def walk(self, ctx):
        # In the run's own order (its params, sorted when validated), not the code's: a
        # deploy that adds or reorders rules cannot move a resumed run's position.
        chosen = [RULES[code] for code in ctx.params["rules"] if code in RULES]
        return rules_walk(chosen, ctx.params["chronicle_id"])

    def process(self, ctx, batch):
        return check_rows(
            RULES[batch.walk],
            batch.items,
            chronicle_id=ctx.params["chronicle_id"],
            fix=ctx.params["fix"],
            dry_run=ctx.dry_run,
        )
