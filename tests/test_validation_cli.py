"""run_maintenance for the validation and XP operations: flags, the grouped report,
--fail-on-findings, and the question before an inline --fix."""

import json
import sys
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from chronicles.models import Character, Scene
from maintenance.models import MaintenanceRun

pytestmark = pytest.mark.django_db


def run_command(*args):
    out = StringIO()
    call_command("run_maintenance", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def problems():
    player = get_user_model().objects.create(username="player")
    broken = [
        Character.objects.create(name=f"Odd {i}", willpower=12, owner=player) for i in range(8)
    ]
    Scene.objects.create(name="Nowhere")  # report only
    return broken


@pytest.fixture
def terminal(monkeypatch):
    """stdin and stdout are terminals, and the person at them answers with `answers`
    (none left: end of input, Ctrl-D)."""
    answers = []

    def answer(prompt):
        if not answers:
            raise EOFError
        return answers.pop(0)

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", answer)
    return answers


def test_the_report_groups_findings_by_rule_with_a_sample(problems):
    text = run_command("validate_data_integrity", "--inline")

    assert "character_trait_out_of_range" in text and "8" in text
    assert "scene_without_chronicle" in text
    assert "... and 3 more" in text  # 5 shown of 8
    assert "/admin/maintenance/finding/?run__id__exact=" in text


def test_rules_flag_and_json_findings_count(problems):
    summary = json.loads(
        run_command(
            "validate_data_integrity", "--inline", "--json", "--rules", "scene_without_chronicle"
        )
    )

    assert summary["params"]["rules"] == ["scene_without_chronicle"]
    assert summary["findings"] == 1


def test_fail_on_findings_exits_1_while_unfixed_findings_remain(problems):
    with pytest.raises(CommandError) as raised:
        run_command("validate_data_integrity", "--inline", "--fail-on-findings")
    assert raised.value.returncode == 1
    assert "left 9 unfixed findings" in str(raised.value)


def test_fail_on_findings_passes_when_everything_was_fixed(problems):
    run_command(
        "validate_data_integrity",
        "--inline",
        "--fix",
        "--no-input",
        "--rules=character_trait_out_of_range",
        "--fail-on-findings",
    )
    assert not Character.objects.filter(willpower__gt=10).exists()


def test_an_inline_fix_on_a_terminal_asks_first_and_no_changes_nothing(problems, terminal):
    terminal.append("n")

    text = run_command("validate_data_integrity", "--inline", "--fix")

    assert "would change 8" in text
    assert "Nothing changed." in text
    assert Character.objects.filter(willpower=12).count() == 8
    assert list(MaintenanceRun.objects.values_list("dry_run", flat=True)) == [True]


def test_answering_yes_applies_the_fixes_as_a_run_of_their_own(problems, terminal):
    terminal.append("y")

    text = run_command("validate_data_integrity", "--inline", "--fix")

    assert "changed 8" in text
    assert not Character.objects.filter(willpower=12).exists()
    assert sorted(MaintenanceRun.objects.values_list("dry_run", flat=True)) == [False, True]


def test_no_input_never_asks(problems, terminal):
    run_command("validate_data_integrity", "--inline", "--fix", "--no-input")

    assert not Character.objects.filter(willpower=12).exists()
    assert terminal == []


def test_end_of_input_at_the_question_means_no(problems, terminal):
    text = run_command("validate_data_integrity", "--inline", "--fix")

    assert "Nothing changed." in text
    assert Character.objects.filter(willpower=12).count() == 8


@pytest.mark.parametrize("terminals", [(False, False), (True, False), (False, True)])
def test_without_two_terminals_a_real_fix_needs_no_input_and_records_nothing(
    problems, monkeypatch, terminals
):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: terminals[0])
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminals[1])

    def no_questions(prompt):
        raise AssertionError("asked without a terminal")

    monkeypatch.setattr("builtins.input", no_questions)

    with pytest.raises(CommandError) as raised:
        run_command("validate_data_integrity", "--inline", "--fix")

    assert raised.value.returncode == 2
    assert "--no-input" in str(raised.value) and "\n" not in str(raised.value)
    assert not MaintenanceRun.objects.exists()
    assert Character.objects.filter(willpower=12).count() == 8
    run_command("validate_data_integrity", "--inline", "--fix", "--no-input")
    assert not Character.objects.filter(willpower=12).exists()


def test_json_never_asks_and_applies(problems, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)

    summary = json.loads(run_command("validate_data_integrity", "--inline", "--fix", "--json"))

    assert summary["status"] == "succeeded" and not summary["dry_run"]
    assert not Character.objects.filter(willpower=12).exists()


def test_recalculate_xp_from_the_command_line():
    Character.objects.create(name="Rich", xp=30, owner=get_user_model().objects.create())

    summary = json.loads(run_command("recalculate_xp", "--inline", "--json"))

    assert (summary["changed"], summary["findings"]) == (1, 1)
    assert Character.objects.get().xp == 0


def test_the_admin_filters_a_runs_findings_by_rule_and_fixed(admin_client, problems):
    run_command("validate_data_integrity", "--inline", "--fix", "--no-input")
    run = MaintenanceRun.objects.get()
    url = reverse("admin:maintenance_finding_changelist")

    by_run = admin_client.get(url, {"run__id__exact": run.pk})
    fixed = admin_client.get(url, {"run__id__exact": run.pk, "fixed__exact": "1"})
    by_rule = admin_client.get(url, {"rule": "scene_without_chronicle"})
    run_page = admin_client.get(reverse("admin:maintenance_maintenancerun_change", args=[run.pk]))

    assert by_run.context["cl"].result_count == 9
    assert fixed.context["cl"].result_count == 8
    assert by_rule.context["cl"].result_count == 1
    assert f"?run__id__exact={run.pk}" in run_page.content.decode()
