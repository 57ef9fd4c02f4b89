"""recalculate_xp: xp becomes the ledger sum, except where that sum is negative."""

import pytest

from chronicles.models import Character, XPEntry
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.models import Finding, MaintenanceRun

pytestmark = pytest.mark.django_db


def recalculate(**raw):
    return execute(create_run("recalculate_xp", raw, trigger=MaintenanceRun.Trigger.CLI))


def character(name, xp, amounts, chronicle=None):
    c = Character.objects.create(name=name, xp=xp, chronicle=chronicle)
    XPEntry.objects.bulk_create(
        [XPEntry(character=c, amount=amount, kind="manual") for amount in amounts]
    )
    return c


@pytest.fixture
def ledgers():
    return {
        "right": character("Right", 7, [5, 3, -1]),
        "short": character("Short", 2, [10, 5]),
        "over": character("Over", 40, [10, -2]),
        "negative": character("Negative", 3, [2, -9]),
        "empty": character("Empty", 4, []),
        "zero": character("Zero", 0, []),
    }


def xp_of(c):
    c.refresh_from_db()
    return c.xp


def test_xp_becomes_the_ledger_sum(ledgers):
    run = recalculate(batch_size=2)

    assert {name: xp_of(c) for name, c in ledgers.items()} == {
        "right": 7,
        "short": 15,
        "over": 8,
        "negative": 3,  # left as it is
        "empty": 0,
        "zero": 0,
    }
    assert (run.processed, run.changed, run.findings) == (6, 3, 4)


def test_each_mismatch_is_a_finding_with_old_and_new(ledgers):
    run = recalculate()

    short = Finding.objects.get(run=run, object_id=ledgers["short"].id)
    assert short.rule == "character_xp_mismatch"
    assert (short.before, short.after, short.fixed) == ({"xp": 2}, {"xp": 15}, True)
    negative = Finding.objects.get(run=run, object_id=ledgers["negative"].id)
    assert negative.fixed is False and negative.after is None
    assert "ledger is negative" in negative.message and "-7" in negative.message
    assert not Finding.objects.filter(run=run, object_id=ledgers["right"].id).exists()


def test_a_dry_run_changes_nothing_and_reports_the_same_findings(ledgers):
    before = {name: xp_of(c) for name, c in ledgers.items()}

    dry = recalculate(dry_run=True)

    assert {name: xp_of(c) for name, c in ledgers.items()} == before
    real = recalculate()
    assert (dry.changed, dry.findings) == (real.changed, real.findings)
    assert list(dry.finding_set.order_by("object_id").values_list("object_id", "after")) == list(
        real.finding_set.order_by("object_id").values_list("object_id", "after")
    )


def test_a_second_run_changes_nothing(ledgers):
    recalculate()

    again = recalculate()

    assert again.changed == 0 and again.findings == 1  # only the negative ledger remains


def test_the_chronicle_filter(ledgers):
    from chronicles.models import Chronicle

    chronicle = Chronicle.objects.create(name="Scoped")
    inside = character("Inside", 1, [4], chronicle=chronicle)

    run = recalculate(chronicle_id=chronicle.id)

    assert run.processed == 1 and run.changed == 1
    assert xp_of(inside) == 4 and xp_of(ledgers["short"]) == 2
