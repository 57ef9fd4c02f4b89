"""Malformed settings, generated with hypothesis and imported in a fresh process: every
bad value is exit 1 (3 for `manage.py monitor_validation`) with exactly one line on
stderr that names the variable, never a traceback; production refuses weak secret keys.
Each example starts Python, so the example counts stay small."""

import os
import re
import subprocess
import sys
import zoneinfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.services import ROOT

SETTING_EXAMPLES = 60
SECRET_EXAMPLES = 30
MONITOR_EXAMPLES = 12
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
SETUP = ["-c", "import django; django.setup()"]
BOOLEANS = ["DJANGO_PRODUCTION", "DJANGO_DEBUG"]
INTEGERS = [
    "CELERY_WORKER_CONCURRENCY",
    "CELERY_TASK_SOFT_TIME_LIMIT",
    "CELERY_TASK_TIME_LIMIT",
    "MAINTENANCE_LEASE_SECONDS",
    "MAINTENANCE_DB_RETRIES",
    "MAINTENANCE_RESUME_WINDOW_HOURS",
    "MAINTENANCE_HEARTBEAT_STALE_SECONDS",
    "MAINTENANCE_IMPORT_MAX_BYTES",
    "MAINTENANCE_MAX_ATTEMPTS",
    "MAINTENANCE_REQUEUE_AFTER_SECONDS",
    "MAINTENANCE_BEAT_LEASE_SECONDS",
    "MAINTENANCE_MISSED_DUE_GRACE_SECONDS",
    "MAINTENANCE_LOCK_TIMEOUT_MS",
    "MAINTENANCE_STATEMENT_TIMEOUT_MS",
    "MAINTENANCE_MAX_LOCK_WAITERS",
    "MAINTENANCE_TARGET_BATCH_MS",
]
DECIMALS = [
    "MAINTENANCE_RETRY_BACKOFF",
    "MAINTENANCE_OVERDUE_GRACE_HOURS",
    "MAINTENANCE_MAX_REPLICATION_LAG_S",
]
URLS = ["DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"]
ACCEPTED_BOOLEANS = {"true", "false", "1", "0", "yes", "no", "on", "off"}
LEVELS = {"CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET"}
ZONES = zoneinfo.available_timezones()

# What an environment variable can hold: no NUL, no lone surrogates; "" means unset.
env_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
)
near_boolean = st.one_of(
    st.sampled_from(["ture", "flase", "Yes please", "2", "-1", "y", "n", "enabled", "0.0", "t"]),
    env_text,
).filter(lambda v: v.strip().lower() not in ACCEPTED_BOOLEANS)
bad_integer = st.one_of(
    st.integers(max_value=-1).map(str),
    st.integers(min_value=10**13).map(str),
    st.sampled_from(["1.5", "1e3", "five", "0x10", "nan", "inf", "١٢", "12abc", "--5"]),
    env_text.filter(lambda v: not re.fullmatch(r"\s*[+-]?[0-9]+\s*", v)),
)
bad_decimal = st.one_of(
    st.floats(max_value=-0.001).map(str),
    st.floats(min_value=1e7, allow_infinity=True).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "0,5", "half", "1.2.3", ".", "e5"]),
    env_text.filter(lambda v: not re.fullmatch(r"\s*[+-]?[0-9.eE+-]+\s*", v)),
)
bad_url = st.one_of(
    env_text.filter(lambda v: "://" not in v),
    st.builds("{}://host:5432/db".format, st.sampled_from(["mysql", "http", "ftp", "x", "redis+"])),
    st.builds(
        "{}://u@host:{}/0".format,
        st.sampled_from(["postgres", "redis"]),
        st.one_of(st.integers(65536, 10**9).map(str), st.sampled_from(["abc", "-1", "6379x"])),
    ),
    st.builds(
        "{}://u:%{}@host/1".format,
        st.sampled_from(["postgres", "redis"]),
        st.sampled_from(["zz", "", "4", "g0", "%"]),
    ),
    st.sampled_from(
        ["redis://host:6379/x", "redis://host /0", "postgres://host:5432/", "sqlite://"]
    ),
)
bad_zone = st.one_of(
    st.sampled_from(["utc", "Europe/berlin", "UTC+1", "../etc/passwd", "Mars/Base", "GMT+25"]),
    env_text,
).filter(lambda v: v not in ZONES)
bad_level = st.one_of(
    st.sampled_from(["loud", "WARNINGS", "5", "verbose", "err"]), env_text
).filter(lambda v: v.strip().upper() not in LEVELS)

malformed = st.one_of(
    st.tuples(st.sampled_from(BOOLEANS), near_boolean),
    st.tuples(st.sampled_from(INTEGERS), bad_integer),
    st.tuples(st.sampled_from(DECIMALS), bad_decimal),
    st.tuples(st.sampled_from(URLS), bad_url),
    st.tuples(st.just("TIME_ZONE"), bad_zone),
    st.tuples(st.just("LOG_LEVEL"), bad_level),
)


def start(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    """Python with exactly these variables (and none of the test run's own settings)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CELERY_", "MAINTENANCE_"))
        and k not in ("DATABASE_URL", "TIME_ZONE", "LOG_LEVEL")
    }
    clean["DJANGO_SETTINGS_MODULE"] = "worker.settings"
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        timeout=120,
    )


def assert_one_line(result, name: str, code: int):
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == code, stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert name in stderr and "Traceback" not in stderr, stderr


@settings(HYPOTHESIS, max_examples=SETTING_EXAMPLES)
@given(setting=malformed)
def test_a_malformed_setting_is_one_line_naming_it_and_exit_1(setting):
    name, value = setting
    assert_one_line(start(SETUP, **{name: value}), name, 1)


@settings(HYPOTHESIS, max_examples=MONITOR_EXAMPLES)
@given(setting=malformed)
def test_monitor_validation_says_unknown_with_exit_3(setting):
    name, value = setting
    result = start(["manage.py", "monitor_validation"], **{name: value})
    assert_one_line(result, name, 3)


weak_key = st.one_of(
    st.just("insecure-development-key-do-not-deploy"),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=49),
    st.builds(
        lambda chars, n, pick: "".join(chars[i % len(chars)] for i in range(n * pick)),
        st.lists(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=4),
        st.integers(50, 200),
        st.just(1),
    ),
)


@settings(HYPOTHESIS, max_examples=SECRET_EXAMPLES)
@given(key=weak_key)
def test_production_refuses_a_weak_or_known_secret_key(key):
    result = start(SETUP, DJANGO_PRODUCTION="true", DJANGO_SECRET_KEY=key)
    assert_one_line(result, "DJANGO_SECRET_KEY", 1)
    assert len(key) < 8 or key not in result.stderr.decode("utf-8", "replace")  # never shown


def test_a_strong_key_and_good_values_start():
    result = start(
        SETUP,
        DJANGO_PRODUCTION="YES",
        DJANGO_SECRET_KEY="Zq8" + "0123456789abcdef" * 4,
        MAINTENANCE_DB_RETRIES="0",
        MAINTENANCE_RETRY_BACKOFF="1.5e0",
        TIME_ZONE="Europe/Berlin",
        LOG_LEVEL="info",
        CELERY_BROKER_URL="redis://:p%40ss@127.0.0.1:6379/13",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/tg",
    )
    assert result.returncode == 0, result.stderr
