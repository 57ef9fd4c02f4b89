"""Start a run in the admin: the list of operations, each one's form generated from its
parameter declarations, the confirmation before a real run that writes data, and the
start, which enqueues one run on the real broker (CELERY_BROKER_URL, the broker_queue
fixture), for staff with the start_maintenancerun permission only. What the form sends
is validated by the operation's own clean(): a refusal is a form error that records
nothing, never a 500."""

import os
import re
from datetime import timedelta

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from hypothesis import event, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from maintenance import admin_start, heartbeat, operations
from maintenance.engine.enqueue import BrokerUnavailable
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run, screen
from maintenance.models import Heartbeat, MaintenanceRun
from maintenance.operations.base import COMMON_PARAMETERS, ParameterError
from maintenance.transfer.format import header_line
from tests import factories
from tests.properties import HYPOTHESIS

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status
NAMES = [operation.name for operation in operations.all_operations()]
LIST = reverse("admin:maintenance_maintenancerun_start")
CHANGELIST = reverse("admin:maintenance_maintenancerun_changelist")
START_LINK = b">Start a run</a>"


def form_url(name):
    return reverse("admin:maintenance_maintenancerun_start_operation", args=[name])


def run_page(run):
    return reverse("admin:maintenance_maintenancerun_change", args=[run.pk])


def staff(client, may_start=True, username="keeper"):
    user = get_user_model().objects.create_user(username, is_staff=True)
    names = ["view_maintenancerun"] + (["start_maintenancerun"] if may_start else [])
    user.user_permissions.set(Permission.objects.filter(codename__in=names))
    client.force_login(user)
    return user


def parameters(name):
    return admin_start.parameters_of(operations.get(name))


def errors_of(response) -> dict[str, list[str]]:
    assert response.status_code == 200
    return response.context["form"].errors


def fresh_heartbeat(age=timedelta(seconds=5)):
    heartbeat.record("worker@here")
    Heartbeat.objects.update(seen_at=timezone.now() - age)


def characters_file(tmp_path):
    path = tmp_path / "characters.jsonl"
    path.write_text(header_line() + "\n")
    return str(path)


# --- who sees it ---


def test_the_changelist_offers_start_a_run_to_those_who_may_start(client):
    staff(client)
    assert START_LINK in client.get(CHANGELIST).content


def test_without_the_permission_no_link_no_pages_and_no_run(client):
    staff(client, may_start=False)
    assert client.get(CHANGELIST).status_code == 200
    assert START_LINK not in client.get(CHANGELIST).content

    for url in [LIST, form_url("archive_old_scenes"), form_url("no_such_operation")]:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"dry_run": "on"}).status_code == 403, url
    assert client.post(form_url("archive_old_scenes"), {"confirm": "Confirm"}).status_code == 403
    assert MaintenanceRun.objects.count() == 0


def test_a_user_who_is_not_staff_is_sent_to_the_login(client):
    user = get_user_model().objects.create_user("player")
    user.user_permissions.set(Permission.objects.filter(codename="start_maintenancerun"))
    client.force_login(user)

    response = client.post(form_url("archive_old_scenes"), {"dry_run": "on"})

    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert MaintenanceRun.objects.count() == 0


def test_an_unknown_operation_is_404(client):
    staff(client)
    assert client.get(form_url("no_such_operation")).status_code == 404
    assert client.post(form_url("no_such_operation"), {"dry_run": "on"}).status_code == 404


def test_a_post_without_the_csrf_token_starts_nothing():
    client = Client(enforce_csrf_checks=True)
    staff(client)

    response = client.post(form_url("archive_old_scenes"), {"dry_run": "on"})

    assert response.status_code == 403
    assert MaintenanceRun.objects.count() == 0


# --- the pages ---


def test_the_list_page_lists_every_operation_with_its_description(client):
    staff(client)

    response = client.get(LIST)

    assert response.status_code == 200
    assert len(NAMES) >= 7
    for operation in operations.all_operations():
        assert f'href="{form_url(operation.name)}">{operation.name}</a>' in response.text
        assert escape(operation.description) in response.text
    assert 'class="breadcrumbs"' in response.text and f'href="{CHANGELIST}"' in response.text
    assert client.post(LIST).status_code == 405


@pytest.mark.parametrize("name", NAMES)
def test_each_form_has_a_typed_field_per_parameter_with_its_default_and_help(client, name):
    staff(client)

    response = client.get(form_url(name))

    assert response.status_code == 200
    form = response.context["form"]
    declared = parameters(name)
    assert list(form.fields) == [p.name for p in declared]
    for parameter in declared:
        field = form[parameter.name]
        html = str(field)
        assert parameter.help in field.help_text
        assert escape(parameter.help) in response.text
        if parameter.kind == "bool":
            assert 'type="checkbox"' in html
            ticked = parameter.name == "dry_run" or bool(parameter.default)
            assert (" checked" in html) is ticked, parameter.name
        elif parameter.kind == "int":
            assert 'type="number"' in html
            for attribute, bound in [("min", parameter.minimum), ("max", parameter.maximum)]:
                assert (f'{attribute}="{bound}"' in html) is (bound is not None), parameter.name
            if parameter.default is not None:
                assert f'value="{parameter.default}"' in html
            else:
                assert "value=" not in html
        elif parameter.kind == "list":
            boxes = re.findall(r'<input type="checkbox" name="[^"]+" value="([^"]+)"', html)
            assert boxes == list(parameter.choices)
            assert html.count(" checked") == len(parameter.default)
        else:
            assert 'type="text"' in html
        assert (" required" in html) is parameter.required, parameter.name
    assert f"Start {name}" in response.text
    assert escape(operations.get(name).description) in response.text


def test_the_form_follows_the_declarations_not_a_copy_of_them():
    """Every kind the declarations use has its own kind of field."""
    kinds = {p.kind for name in NAMES for p in parameters(name)}
    assert kinds == {"int", "bool", "text", "list"}
    fields = {
        p.kind: type(admin_start.field_for(operations.get(name), p)).__name__
        for name in NAMES
        for p in parameters(name)
    }
    assert fields == {
        "int": "WholeNumberField",
        "bool": "BooleanField",
        "text": "CharField",
        "list": "NamesField",
    }


def test_dry_run_is_ticked_by_default(client):
    staff(client)
    for name in NAMES:
        html = str(client.get(form_url(name)).context["form"]["dry_run"])
        assert 'name="dry_run"' in html and " checked" in html, name


# --- starting ---


def test_a_dry_run_starts_at_once(client, broker_queue):
    staff(client)
    fresh_heartbeat()

    response = client.post(
        form_url("archive_old_scenes"), {"dry_run": "on", "older_than_days": "30"}, follow=True
    )

    (run,) = MaintenanceRun.objects.all()
    assert (run.operation, run.trigger, run.requested_by) == (
        "archive_old_scenes",
        "admin",
        "keeper",
    )
    assert run.params == {"older_than_days": 30, "chronicle_id": None}
    assert (run.dry_run, run.batch_size, run.partitions, run.status) == (True, None, 1, "queued")
    assert response.redirect_chain == [(run_page(run), 302)]
    assert f"Started archive_old_scenes (dry run) as run #{run.pk}." in response.text
    assert "No worker has" not in response.text
    (message,) = broker_queue.lrange(current_app.conf.task_default_queue, 0, -1)
    assert run.celery_task_id.encode() in message


def test_a_real_run_that_writes_needs_the_confirmation(client, broker_queue):
    staff(client)
    chronicle = factories.chronicle()
    values = {"older_than_days": "45", "chronicle_id": str(chronicle.pk), "batch_size": "200"}

    confirmation = client.post(form_url("archive_old_scenes"), values)

    assert confirmation.status_code == 200
    assert MaintenanceRun.objects.count() == 0  # looking starts nothing
    assert broker_queue.llen(current_app.conf.task_default_queue) == 0
    text = confirmation.text
    assert "This is a real run, not a dry run" in text and "csrfmiddlewaretoken" in text
    assert 'value="Confirm"' in text and 'value="Back"' in text
    rows = dict(re.findall(r'<th scope="row">(\w+)</th><td>([^<]*)</td>', text))
    assert rows == {
        "older_than_days": "45",
        "chronicle_id": str(chronicle.pk),
        "dry_run": "no",
        "batch_size": "200",
        "partitions": "1",
    }
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', text))
    assert hidden.pop("csrfmiddlewaretoken")
    assert hidden == {**values, "dry_run": "False"}
    assert '<input type="hidden" name="partitions"' in text  # empty: the default

    back = client.post(form_url("archive_old_scenes"), {**hidden, "back": "Back"})
    assert back.status_code == 200 and back.context["form"]["older_than_days"].value() == "45"
    assert " checked" not in str(back.context["form"]["dry_run"])
    assert MaintenanceRun.objects.count() == 0

    done = client.post(form_url("archive_old_scenes"), {**hidden, "confirm": "Confirm"})

    (run,) = MaintenanceRun.objects.all()
    assert done.status_code == 302 and done["Location"] == run_page(run)
    assert run.params == {"older_than_days": 45, "chronicle_id": chronicle.pk}
    assert (run.dry_run, run.batch_size, run.trigger, run.requested_by) == (
        False,
        200,
        "admin",
        "keeper",
    )
    assert broker_queue.llen(current_app.conf.task_default_queue) == 1


@pytest.mark.parametrize(
    "name, values, confirm",
    [
        ("validate_data_integrity", {}, False),  # finds, writes no game data
        ("validate_data_integrity", {"fix": "on"}, True),
        ("validate_data_integrity", {"fix": "on", "dry_run": "on"}, False),
        ("recalculate_xp", {}, True),
        ("purge_history", {}, True),
        ("archive_old_scenes", {"partitions": "3"}, True),
    ],
)
def test_which_runs_ask_for_a_confirmation(client, broker_queue, name, values, confirm):
    staff(client)
    rules = {"rules": list(operations.get("validate_data_integrity").parameters[1].choices)}
    data = {**(rules if name == "validate_data_integrity" else {}), **values}

    response = client.post(form_url(name), data)

    if confirm:
        assert response.status_code == 200 and 'value="Confirm"' in response.text
        assert MaintenanceRun.objects.count() == 0
        response = client.post(form_url(name), {**data, "confirm": "Confirm"})
    (run,) = MaintenanceRun.objects.all()
    assert response.status_code == 302 and response["Location"] == run_page(run)
    assert run.operation == name


def test_unticked_rules_are_only_those_ticked(client, broker_queue):
    staff(client)
    rules = ["scene_without_chronicle", "post_without_scene"]

    client.post(form_url("validate_data_integrity"), {"rules": rules, "dry_run": "on"})

    (run,) = MaintenanceRun.objects.all()
    assert run.params == {"fix": False, "rules": sorted(rules), "chronicle_id": None}


def test_a_revert_and_an_apply_start_from_the_form(client, broker_queue):
    staff(client)
    factories.scene(name="old")
    dry = execute(create_run("archive_old_scenes", {"dry_run": True}, trigger="cli"))
    real = execute(create_run("archive_old_scenes", {}, trigger="cli"))

    for name, target in [("apply_run", dry), ("revert_run", real)]:
        values = {"run_id": str(target.pk), "confirm": "Confirm"}
        response = client.post(form_url(name), values)
        new = MaintenanceRun.objects.get(operation=name)
        assert response["Location"] == run_page(new) and new.params == {"run_id": target.pk}


def test_an_import_starts_with_an_absolute_path(client, broker_queue, tmp_path):
    staff(client)
    path = characters_file(tmp_path)

    client.post(form_url("import_characters"), {"path": path, "dry_run": "on"})

    (run,) = MaintenanceRun.objects.all()
    assert run.params == {"path": path, "create_owners": False, "create_chronicles": False}


def test_with_the_broker_down_the_form_says_so_and_nothing_is_queued(client, monkeypatch):
    def down():
        raise BrokerUnavailable("the broker at redis://nowhere is unreachable (refused)")

    monkeypatch.setattr("maintenance.engine.enqueue.check_broker", down)
    staff(client)

    response = client.post(form_url("archive_old_scenes"), {"dry_run": "on"})

    assert response.status_code == 200
    assert "Archive_old_scenes not started: the broker at redis://nowhere" in response.text
    assert response.context["form"]["dry_run"].value() is True  # kept for a retry
    assert MaintenanceRun.objects.count() == 0


# --- refusals ---

BAD_VALUES = [
    ("archive_old_scenes", {"older_than_days": "0"}, "older_than_days", "must be at least 1"),
    ("archive_old_scenes", {"older_than_days": "36501"}, "older_than_days", "at most 36500"),
    ("archive_old_scenes", {"older_than_days": "abc"}, "older_than_days", "whole number"),
    ("archive_old_scenes", {"older_than_days": "٣"}, "older_than_days", "whole number"),
    ("archive_old_scenes", {"older_than_days": "5.0"}, "older_than_days", "whole number"),
    ("archive_old_scenes", {"older_than_days": "9" * 5000}, "older_than_days", "out of range"),
    ("archive_old_scenes", {"older_than_days": "1\x00"}, "older_than_days", "NUL character"),
    ("archive_old_scenes", {"chronicle_id": "999999"}, "chronicle_id", "does not exist"),
    ("archive_old_scenes", {"batch_size": "10001"}, "batch_size", "at most 10000"),
    ("archive_old_scenes", {"partitions": "65"}, "partitions", "at most 64"),
    ("recalculate_xp", {"chronicle_id": str(2**63)}, "chronicle_id", "out of range"),
    ("validate_data_integrity", {"rules": ["no_such_rule"]}, "rules", "unknown no_such_rule"),
    ("validate_data_integrity", {}, "rules", "must name at least one"),  # none ticked
    ("import_characters", {}, "path", "path is required"),
    ("import_characters", {"path": "/no/such/file"}, "path", "no such file"),
    ("import_characters", {"path": "relative.jsonl"}, "path", "must be an absolute path"),
    ("import_characters", {"path": "/tmp/a\x00b"}, "path", "Null characters"),
    ("import_characters", {"path": "/" + "x" * 10_001}, "path", "characters"),
    ("revert_run", {}, "run_id", "run_id is required"),
    ("revert_run", {"run_id": "424242"}, "run_id", "no run #424242"),
    ("apply_run", {"run_id": "-1"}, "run_id", "at least 1"),
]


@pytest.mark.parametrize("name, values, field, message", BAD_VALUES)
@pytest.mark.parametrize("confirm", [False, True])
def test_bad_values_are_form_errors_and_record_nothing(
    client, name, values, field, message, confirm
):
    staff(client)
    data = {**values, **({"confirm": "Confirm"} if confirm else {})}

    response = client.post(form_url(name), data)

    errors = errors_of(response)
    assert field in errors and message in " ".join(errors[field]), errors
    assert "Please correct the error" in response.text
    assert MaintenanceRun.objects.count() == 0


def test_what_no_single_field_can_say_is_one_line_above_the_form(client, tmp_path):
    staff(client)
    path = characters_file(tmp_path)

    response = client.post(form_url("import_characters"), {"path": path, "partitions": "2"})

    assert errors_of(response) == {
        "__all__": ["import_characters cannot be split: partitions must be 1"]
    }
    assert MaintenanceRun.objects.count() == 0


def test_a_revert_of_a_dry_run_is_refused_with_its_reason(client):
    staff(client)
    dry = execute(create_run("archive_old_scenes", {"dry_run": True}, trigger="cli"))
    before = MaintenanceRun.objects.count()

    for data in [{"run_id": str(dry.pk)}, {"run_id": str(dry.pk), "confirm": "Confirm"}]:
        errors = errors_of(client.post(form_url("revert_run"), data))
        assert "is a dry run" in errors["run_id"][0]
    assert MaintenanceRun.objects.count() == before


def test_a_refusal_after_the_confirmation_page_starts_nothing(client, broker_queue):
    """Between the confirmation page and Confirm, someone else reverts the run."""
    staff(client)
    factories.scene(name="old")
    real = execute(create_run("archive_old_scenes", {}, trigger="cli"))
    page = client.post(form_url("revert_run"), {"run_id": str(real.pk)})
    assert 'value="Confirm"' in page.text
    other = create_run("revert_run", {"run_id": real.pk}, trigger="cli")
    before = MaintenanceRun.objects.count()

    response = client.post(form_url("revert_run"), {"run_id": str(real.pk), "confirm": "Confirm"})

    assert f"already reverted by run #{other.pk}" in errors_of(response)["run_id"][0]
    assert MaintenanceRun.objects.count() == before


# --- the no-worker warning ---


def test_without_any_heartbeat_the_form_and_the_run_page_warn(client, broker_queue):
    staff(client)
    warning = "No worker has ever answered: the run will wait in the queue until one starts."

    assert warning in client.get(form_url("archive_old_scenes")).text
    response = client.post(form_url("archive_old_scenes"), {"dry_run": "on"}, follow=True)
    assert warning in response.text and "Started archive_old_scenes (dry run)" in response.text


def test_a_stale_heartbeat_warns_with_its_time(client, broker_queue, settings):
    staff(client)
    stale = timedelta(seconds=settings.MAINTENANCE_HEARTBEAT_STALE_SECONDS + 60)
    fresh_heartbeat(age=stale)
    seen = timezone.localtime(Heartbeat.objects.get().seen_at)
    today = seen.date() == timezone.localtime().date()
    when = f"{seen:%H:%M}" if today else f"{seen:%Y-%m-%d %H:%M}"
    warning = f"No worker has answered since {when}: the run will wait in the queue until one"

    assert warning in client.get(form_url("archive_old_scenes")).text
    confirmation = client.post(form_url("archive_old_scenes"), {})
    assert warning in confirmation.text
    response = client.post(form_url("archive_old_scenes"), {"dry_run": "on"}, follow=True)
    assert warning in response.text


def test_an_old_heartbeat_is_given_with_its_date(client):
    staff(client)
    fresh_heartbeat(age=timedelta(days=3))
    seen = timezone.localtime(Heartbeat.objects.get().seen_at)

    text = client.get(form_url("recalculate_xp")).text

    assert f"No worker has answered since {seen:%Y-%m-%d %H:%M}:" in text


def test_a_fresh_heartbeat_gives_no_warning(client, broker_queue):
    staff(client)
    fresh_heartbeat()

    assert "No worker has" not in client.get(form_url("archive_old_scenes")).text
    response = client.post(form_url("archive_old_scenes"), {"dry_run": "on"}, follow=True)
    assert "No worker has" not in response.text and "Started archive_old_scenes" in response.text


# --- the property: never a 500; a refusal records nothing; a start is the clean values ---

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


def value_for(parameter, targets, sane):
    """What a browser could send for one parameter (None: an empty field): when `sane`,
    a usable value or none, so that both refusals and starts are common."""
    if parameter.kind == "bool":
        return st.booleans()
    if parameter.kind == "list":
        known = st.lists(st.sampled_from(parameter.choices), min_size=1)
        anything = st.lists(st.one_of(st.sampled_from(parameter.choices), TEXT), max_size=8)
        return known if sane else st.one_of(known, anything)
    if parameter.kind == "text":
        good = st.sampled_from(targets["paths"])
        if sane:
            return good
        return st.one_of(st.none(), good, TEXT, st.just("/" + "x" * 10_001))
    low, high = parameter.minimum or 0, parameter.maximum or 2**63 - 1
    ids = targets.get(parameter.name)  # a chronicle or a run that must exist
    usable = st.sampled_from(ids) if ids else st.integers(low, min(high, low + 100))
    wrong = st.one_of(
        st.integers(low - 2, low - 1),
        st.integers(high + 1, high + 2),
        st.integers(-(2**80), 2**80),
    )
    if sane:
        return st.one_of(st.none(), usable.map(str))
    return st.one_of(st.none(), st.one_of(usable, wrong).map(str), TEXT)


def posted(raw: dict) -> dict:
    """The POST body of raw values: a ticked box is "on", an unticked one is absent."""
    body = {"confirm": "Confirm"}  # straight through, as from the confirmation page
    for name, value in raw.items():
        if value is True:
            body[name] = "on"
        elif value is not False:
            body[name] = value
    return body


def also_refused_by_the_form(operation, raw) -> bool:
    """What the form refuses beyond operation.clean: a relative path, text no parser
    should meet."""
    for parameter in admin_start.parameters_of(operation):
        value = raw.get(parameter.name)
        if parameter.is_path and isinstance(value, str) and not os.path.isabs(value):
            return True
        try:
            screen(value)
        except ParameterError:
            return True
    return False


@pytest.fixture
def targets(tmp_path):
    """Values that exist: a chronicle, finished runs (a dry run to apply, a fix to
    revert), a characters file (and its relative path, which only the form refuses)."""
    chronicle = factories.chronicle()
    factories.scene(name="old", chronicle=chronicle)
    dry = execute(create_run("archive_old_scenes", {"dry_run": True}, trigger="cli"))
    real = execute(create_run("validate_data_integrity", {"fix": True}, trigger="cli"))
    path = characters_file(tmp_path)
    return {
        "chronicle_id": [chronicle.pk],
        "run_id": [dry.pk, real.pk],
        "paths": [path, os.path.relpath(path)],
    }


@hypothesis_settings(HYPOTHESIS, max_examples=150)
@given(data=st.data())
def test_any_posted_values_give_a_form_error_or_exactly_the_clean_run(
    client, broker_queue, targets, data
):
    if not get_user_model().objects.filter(username="keeper").exists():
        staff(client)
    operation = operations.get(data.draw(st.sampled_from(NAMES), label="operation"))
    declared = admin_start.parameters_of(operation)
    sane = data.draw(st.booleans(), label="sane")
    raw = {p.name: data.draw(value_for(p, targets, sane), label=p.name) for p in declared}
    raw = {name: value for name, value in raw.items() if value not in (None, "")}
    note(raw)
    try:
        expected = operation.clean(raw)
    except ParameterError:
        expected = None
    before = set(MaintenanceRun.objects.values_list("pk", flat=True))

    response = client.post(form_url(operation.name), posted(raw))

    new = list(MaintenanceRun.objects.exclude(pk__in=before))
    assert response.status_code in (200, 302)
    event(f"{operation.name}: {'refused' if response.status_code == 200 else 'started'}")
    if response.status_code == 200:
        assert response.context["form"].errors, response.text[:2000]
        assert new == []
        assert expected is None or also_refused_by_the_form(operation, raw)
    else:
        assert expected is not None
        (run,) = new
        assert response["Location"] == run_page(run)
        assert (run.operation, run.trigger, run.requested_by) == (operation.name, "admin", "keeper")
        assert run.params == expected.params
        assert (run.dry_run, run.batch_size, run.partitions) == expected[1:]


def test_common_parameters_are_on_every_form():
    for name in NAMES:
        names = [p.name for p in parameters(name)]
        assert names[-len(COMMON_PARAMETERS) :] == ["dry_run", "batch_size", "partitions"]
