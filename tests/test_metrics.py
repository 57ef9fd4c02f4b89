"""/metrics: Prometheus text computed from the database at scrape time, the token rule,
hostile Authorization headers, a database that cannot answer, and (hypothesis) the
exported totals against the database's own sums for any mix of runs."""

import math
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from chronicles.models import Character
from maintenance import operations
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run, record_rejected
from maintenance.engine.states import ACTIVE, FINISHED
from maintenance.heartbeat import NAME as HEARTBEAT
from maintenance.models import Heartbeat, MaintenanceRun
from maintenance.observability import metrics
from tests import factories
from tests.services import ROOT

pytestmark = pytest.mark.django_db
Status = MaintenanceRun.Status
TOKEN = "s3cret-metrics-token-0123456789abcdef"
TRAIT = "character_trait_out_of_range"
OPERATIONS = [operation.name for operation in operations.all_operations()]
PER_OPERATION = [
    "tg_maintenance_rows_processed_total",
    "tg_maintenance_rows_changed_total",
    "tg_maintenance_throttled_seconds_total",
    "tg_maintenance_findings_new_total",
    "tg_maintenance_last_success_timestamp_seconds",
    "tg_maintenance_running_runs",
]
HYPOTHESIS = hypothesis_settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)


# --- helpers -------------------------------------------------------------------------


@pytest.fixture
def debug(settings):
    """Development: no token, DEBUG on, so /metrics is served without one."""
    settings.DEBUG = True
    settings.MAINTENANCE_METRICS_TOKEN = ""
    return settings


@pytest.fixture
def with_token(settings):
    settings.DEBUG = False
    settings.MAINTENANCE_METRICS_TOKEN = TOKEN
    return settings


def scrape(client, authorization=None, method="get"):
    headers = {} if authorization is None else {"authorization": authorization}
    return getattr(client, method)("/metrics", headers=headers)


def samples(response) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels): value} of a 200 answer."""
    assert response.status_code == 200, response.content[:300]
    text = response.content.decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found, name, **labels):
    return found[(name, frozenset(labels.items()))]


def helps(response) -> dict[str, str]:
    text = response.content.decode()
    return {family.name: family.documentation for family in text_string_to_metric_families(text)}


def archive(**raw):
    return execute(create_run("archive_old_scenes", raw, trigger=MaintenanceRun.Trigger.CLI))


def validate(**raw):
    params = {"rules": [TRAIT], **raw}
    run = create_run("validate_data_integrity", params, trigger=MaintenanceRun.Trigger.CLI)
    return execute(run)


# --- what is exported ----------------------------------------------------------------


def test_every_operation_and_outcome_appears_with_0_before_any_run(client, debug):
    response = scrape(client)

    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    found = samples(response)
    for operation in OPERATIONS:
        for status in FINISHED:
            assert (
                value(found, "tg_maintenance_runs_total", operation=operation, status=status) == 0
            )
        for name in PER_OPERATION:
            assert value(found, name, operation=operation) == 0
    # Unknown is not zero: no validation yet, no heartbeat yet.
    assert not [key for key in found if key[0] == "tg_maintenance_open_findings"]
    assert not [key for key in found if key[0] == "tg_maintenance_heartbeat_age_seconds"]


def test_every_metric_has_help_text(client, debug):
    documented = helps(scrape(client))

    families = {
        "tg_maintenance_runs",
        "tg_maintenance_rows_processed",
        "tg_maintenance_rows_changed",
        "tg_maintenance_open_findings",
        "tg_maintenance_last_success_timestamp_seconds",
        "tg_maintenance_running_runs",
        "tg_maintenance_throttled_seconds",
        "tg_maintenance_heartbeat_age_seconds",
        "tg_maintenance_findings_new",
    }
    assert families <= set(documented)
    assert all(len(documented[name]) > 20 for name in families)


def test_runs_rows_and_last_success_follow_executed_runs(client, debug):
    for i in range(7):
        factories.scene(name=f"old{i}")
    dry = archive(dry_run=True, batch_size=3)
    real = archive(batch_size=3)
    rejected = record_rejected(
        "archive_old_scenes", {"older_than_days": -1}, "out of range", trigger="cli"
    )
    assert (dry.status, real.status, rejected.status) == (Status.SUCCEEDED,) * 2 + (Status.FAILED,)

    found = samples(scrape(client))

    runs = {
        status: value(
            found, "tg_maintenance_runs_total", operation="archive_old_scenes", status=status
        )
        for status in FINISHED
    }
    assert runs == {Status.SUCCEEDED: 2, Status.FAILED: 1, Status.SKIPPED: 0, Status.CANCELLED: 0}
    ops = {"operation": "archive_old_scenes"}
    # The dry run read the 7 rows too, but changed none of them.
    assert value(found, "tg_maintenance_rows_processed_total", **ops) == 14
    assert value(found, "tg_maintenance_rows_changed_total", **ops) == 7
    last = value(found, "tg_maintenance_last_success_timestamp_seconds", **ops)
    assert last == pytest.approx(real.finished_at.timestamp(), abs=1e-6)
    assert value(found, "tg_maintenance_running_runs", **ops) == 0
    other = {"operation": "recalculate_xp", "status": Status.SUCCEEDED}
    assert value(found, "tg_maintenance_runs_total", **other) == 0


def test_open_and_new_findings_follow_the_latest_validation(client, debug):
    broken = [Character.objects.create(name=f"c{i}", willpower=20).pk for i in range(3)]
    Character.objects.create(name="fine", willpower=5)
    first = validate()
    Character.objects.filter(pk=broken[0]).update(willpower=5)
    second = validate()
    assert (first.findings_new, second.findings_new) == (3, 0)

    found = samples(scrape(client))

    assert value(found, "tg_maintenance_open_findings", rule=TRAIT) == 2
    ops = {"operation": "validate_data_integrity"}
    assert value(found, "tg_maintenance_findings_new_total", **ops) == 3


def test_a_rule_the_latest_validation_checked_and_found_clean_is_0(client, debug):
    Character.objects.create(name="fine", willpower=5)
    validate()

    found = samples(scrape(client))

    assert value(found, "tg_maintenance_open_findings", rule=TRAIT) == 0
    assert [key for key in found if key[0] == "tg_maintenance_open_findings"] == [
        ("tg_maintenance_open_findings", frozenset({("rule", TRAIT)}))
    ]


def test_running_runs_and_throttled_seconds(client, debug):
    now = timezone.now()
    MaintenanceRun.objects.create(
        operation="recalculate_xp",
        trigger=MaintenanceRun.Trigger.BEAT,
        status=Status.RUNNING,  # test set-up: the state to read
        started_at=now,
        heartbeat_at=now,
        lease_token="someone",
        throttled_s=2.5,
    )
    MaintenanceRun.objects.create(
        operation="recalculate_xp",
        trigger=MaintenanceRun.Trigger.BEAT,
        status=Status.SUCCEEDED,  # test set-up
        finished_at=now,
        throttled_s=4.25,
    )

    found = samples(scrape(client))

    ops = {"operation": "recalculate_xp"}
    assert value(found, "tg_maintenance_running_runs", **ops) == 1
    assert value(found, "tg_maintenance_throttled_seconds_total", **ops) == 6.75
    # In flight is not an outcome: it is not counted among the finished runs.
    total = sum(value(found, "tg_maintenance_runs_total", **ops, status=s) for s in FINISHED)
    assert total == 1


def test_heartbeat_age(client, debug):
    Heartbeat.objects.create(
        name=HEARTBEAT, seen_at=timezone.now() - timedelta(seconds=42), hostname="w1"
    )

    age = value(samples(scrape(client)), "tg_maintenance_heartbeat_age_seconds")

    assert 42 <= age < 42 + 30


def test_a_heartbeat_from_a_clock_ahead_is_age_0(client, debug):
    Heartbeat.objects.create(name=HEARTBEAT, seen_at=timezone.now() + timedelta(minutes=5))

    assert value(samples(scrape(client)), "tg_maintenance_heartbeat_age_seconds") == 0


def test_an_operation_only_the_history_knows_is_exported_too(client, debug):
    record_rejected("no_such_operation", {}, "unknown operation", trigger="cli")

    found = samples(scrape(client))

    labels = {"operation": "no_such_operation", "status": Status.FAILED}
    assert value(found, "tg_maintenance_runs_total", **labels) == 1


def test_registering_the_collector_reads_nothing(monkeypatch):
    from prometheus_client import CollectorRegistry

    monkeypatch.setattr(metrics, "read_snapshot", lambda: pytest.fail("read at register()"))

    CollectorRegistry().register(metrics.MaintenanceCollector())


# --- the token rule ------------------------------------------------------------------


def test_off_in_production_mode_without_a_token(client, settings):
    settings.DEBUG = False
    settings.MAINTENANCE_METRICS_TOKEN = ""

    for method in ("get", "head", "post"):
        response = scrape(client, method=method)
        assert response.status_code == 404
        assert b"tg_maintenance" not in response.content


def test_served_in_development_without_a_token(client, debug):
    response = scrape(client)

    assert response.status_code == 200
    assert b"tg_maintenance_runs_total" in response.content


@pytest.mark.parametrize("debug_on", [False, True])
def test_a_token_is_required_when_set(client, settings, debug_on):
    settings.DEBUG = debug_on
    settings.MAINTENANCE_METRICS_TOKEN = TOKEN

    missing = scrape(client)
    wrong = scrape(client, f"Bearer {TOKEN}x")
    right = scrape(client, f"Bearer {TOKEN}")

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused["WWW-Authenticate"].startswith("Bearer ")
        assert b"tg_maintenance" not in refused.content
    assert right.status_code == 200
    assert right["Content-Type"] == CONTENT_TYPE_LATEST
    assert b"tg_maintenance_runs_total" in right.content


def test_the_scheme_is_case_insensitive(client, with_token):
    assert scrape(client, f"bearer {TOKEN}").status_code == 200
    assert scrape(client, f"BEARER  {TOKEN} ").status_code == 200


HOSTILE = [
    "Bearer",
    "Bearer ",
    "bearer",
    "bearer wrong",
    f"Basic {TOKEN}",
    f"Token {TOKEN}",
    TOKEN,
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN} extra",
    f"Bearer {TOKEN}\x00",
    f"Bearer\t{TOKEN}",
    "Bearer " + "A" * 100_000,
    "B" * 100_000,
    "Bearer é€😀",
    f"Bearer {TOKEN}é",
    "Bearer \udcff\udc80",
    "Bearer ÿÿÿÿ",  # latin-1, as WSGI servers decode header bytes
    "\r\n\r\n",
    "",
]


@pytest.mark.parametrize("header", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_authorization_header_is_401_never_500(client, with_token, header):
    response = scrape(client, header)

    assert response.status_code == 401
    assert b"tg_maintenance" not in response.content


@hypothesis_settings(HYPOTHESIS, max_examples=150)
@given(header=st.text(max_size=300))
def test_any_other_header_is_401(client, with_token, header):
    response = scrape(client, header)

    assert response.status_code == 401
    assert b"tg_maintenance" not in response.content


# --- methods and failures ------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
def test_get_and_head_only(client, with_token, method):
    response = scrape(client, f"Bearer {TOKEN}", method=method)

    assert response.status_code == 405
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def test_head_has_the_headers_and_no_body(client, with_token):
    response = scrape(client, f"Bearer {TOKEN}", method="head")

    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    assert response.content == b""


def test_never_cached(client, with_token):
    assert "no-cache" in scrape(client, f"Bearer {TOKEN}")["Cache-Control"]


def test_a_database_error_is_503_with_one_line(client, with_token):
    # A real error from the real database: a table it cannot find. The test's
    # transaction rolls the rename back.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE maintenance_heartbeat RENAME TO maintenance_heartbeat_gone")

    response = scrape(client, f"Bearer {TOKEN}")

    assert response.status_code == 503
    body = response.content.decode()
    assert body.endswith("\n") and body.count("\n") == 1
    assert "Traceback" not in body and "tg_maintenance_" not in body


def test_a_database_error_does_not_show_its_text(client, with_token, monkeypatch):
    def down():
        raise OperationalError('connection to server at "db.internal" (10.0.0.7) failed')

    monkeypatch.setattr(metrics, "heartbeat_age_seconds", down)

    response = scrape(client, f"Bearer {TOKEN}")

    assert response.status_code == 503
    assert b"OperationalError" in response.content
    assert b"db.internal" not in response.content and b"10.0.0.7" not in response.content


def test_a_slow_database_is_cut_off_by_the_statement_timeout(
    client, with_token, monkeypatch, postgresql
):
    def slow():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")

    monkeypatch.setattr(metrics, "STATEMENT_TIMEOUT_MS", 100)
    monkeypatch.setattr(metrics, "heartbeat_age_seconds", slow)

    response = scrape(client, f"Bearer {TOKEN}")

    assert response.status_code == 503


# --- the setting ---------------------------------------------------------------------


def load_token(value: str) -> subprocess.CompletedProcess:
    """Import the settings in a fresh process with MAINTENANCE_METRICS_TOKEN=value."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CELERY_", "MAINTENANCE_")) and k != "DATABASE_URL"
    }
    show = (
        "import django; django.setup(); from django.conf import settings; "
        "print(repr(settings.MAINTENANCE_METRICS_TOKEN))"
    )
    return subprocess.run(
        [sys.executable, "-c", show],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "worker.settings",
            "MAINTENANCE_METRICS_TOKEN": value,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_token_comes_from_the_environment_and_empty_is_none():
    assert load_token(TOKEN).stdout.strip() == repr(TOKEN)
    assert load_token("").stdout.strip() == "''"


@pytest.mark.parametrize(
    "bad", ["sh0rt-t0ken", "has a space in it, long enough", "tökenwithumlaut1234"]
)
def test_a_token_no_client_could_send_or_easy_to_guess_is_refused_in_one_line(bad):
    shown = load_token(bad)

    assert shown.returncode == 1
    assert shown.stderr.count("\n") == 1 and "MAINTENANCE_METRICS_TOKEN" in shown.stderr
    assert bad not in shown.stderr and "Traceback" not in shown.stderr


# --- the totals are the database's sums, for any mix of runs ---------------------------

run_specs = st.lists(
    st.fixed_dictionaries(
        {
            "operation": st.sampled_from([*OPERATIONS, "retired_operation"]),
            "status": st.sampled_from(Status.values),
            "dry_run": st.booleans(),
            "processed": st.integers(0, 10**12),
            "changed": st.integers(0, 10**9),
            "throttled_s": st.floats(0, 1e6, allow_nan=False),
            "findings_new": st.one_of(st.none(), st.integers(0, 10**6)),
            "finished_ago_s": st.integers(0, 10**8),
        }
    ),
    max_size=25,
)


def one_active_per_operation(specs):
    """The database allows one active run per operation: later ones become queued."""
    seen = set()
    for spec in specs:
        if spec["status"] in ACTIVE:
            if spec["operation"] in seen:
                spec["status"] = Status.QUEUED
            seen.add(spec["operation"])
    return specs


def create_runs(specs):
    now = timezone.now()
    MaintenanceRun.objects.bulk_create(
        [
            MaintenanceRun(
                operation=spec["operation"],
                trigger=MaintenanceRun.Trigger.API,
                status=spec["status"],
                dry_run=spec["dry_run"],
                processed=spec["processed"],
                changed=spec["changed"],
                throttled_s=spec["throttled_s"],
                findings_new=spec["findings_new"],
                finished_at=now - timedelta(seconds=spec["finished_ago_s"]),
            )
            for spec in specs
        ]
    )


def database_sums(operation):
    runs = MaintenanceRun.objects.filter(operation=operation)
    real = runs.filter(dry_run=False)
    sums = runs.aggregate(
        processed=Sum("processed"), throttled_s=Sum("throttled_s"), findings_new=Sum("findings_new")
    )
    last = real.filter(status=Status.SUCCEEDED).order_by("-finished_at").first()
    return {
        "tg_maintenance_rows_processed_total": int(sums["processed"] or 0),
        "tg_maintenance_rows_changed_total": int(real.aggregate(c=Sum("changed"))["c"] or 0),
        "tg_maintenance_throttled_seconds_total": float(sums["throttled_s"] or 0),
        "tg_maintenance_findings_new_total": int(sums["findings_new"] or 0),
        "tg_maintenance_last_success_timestamp_seconds": (
            last.finished_at.timestamp() if last else 0
        ),
        "tg_maintenance_running_runs": runs.filter(status__in=ACTIVE).count(),
    }


@hypothesis_settings(HYPOTHESIS, max_examples=40)
@given(specs=run_specs.map(one_active_per_operation))
def test_exported_totals_are_the_database_sums(client, debug, specs):
    MaintenanceRun.objects.all().delete()
    create_runs(specs)

    found = samples(scrape(client))

    for operation in {*OPERATIONS, *(spec["operation"] for spec in specs)}:
        for status in FINISHED:
            expected = MaintenanceRun.objects.filter(operation=operation, status=status).count()
            labels = {"operation": operation, "status": status}
            assert value(found, "tg_maintenance_runs_total", **labels) == expected
        for name, expected in database_sums(operation).items():
            exported = value(found, name, operation=operation)
            assert math.isclose(exported, expected, rel_tol=1e-9, abs_tol=1e-6), name
    # And the grand totals, straight from the generated runs.
    exported_processed = sum(v for (n, _), v in found.items() if n.endswith("processed_total"))
    assert exported_processed == sum(spec["processed"] for spec in specs)
    assert sum(v for (n, _), v in found.items() if n == "tg_maintenance_runs_total") == sum(
        spec["status"] in FINISHED for spec in specs
    )
