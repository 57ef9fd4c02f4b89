"""validate_data_integrity: run the integrity rules, record each problem as a finding,
and with fix repair what can be repaired without deleting anything."""

from maintenance.operations.base import Operation, Parameter
from maintenance.operations.common import CHRONICLE_ID
from maintenance.operations.registry import register
from maintenance.operations.rule_walk import check_batch
from maintenance.operations.rules import RULES


@register
class ValidateDataIntegrity(Operation):
    name = "validate_data_integrity"
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

    def _rules(self, params):
        # Always in the declared order, so a checkpoint's rule index stays meaningful.
        return [rule for code, rule in RULES.items() if code in params["rules"]]

    def count_remaining(self, params, context, position):
        index, after_id = position or (0, 0)
        rules = self._rules(params)
        remaining = 0
        for number, rule in enumerate(rules[index:], start=index):
            rows = rule.scope(params["chronicle_id"])
            remaining += rows.filter(id__gt=after_id if number == index else 0).count()
        return remaining

    def run_batch(self, params, context, position, batch_size, dry_run):
        return check_batch(
            self._rules(params),
            chronicle_id=params["chronicle_id"],
            fix=params["fix"],
            position=position,
            batch_size=batch_size,
            dry_run=dry_run,
        )
