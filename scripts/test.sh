#!/usr/bin/env bash
# The test command of the README (`make test`). Two suites:
#   1. the default suite on SQLite, with no server;
#   2. the whole suite again on PostgreSQL with Redis, including the integration tests
#      that start real celery worker and beat processes; its long scenarios run in a
#      second pytest process beside it.
# The second is skipped, and says so, when the servers are unreachable; under CI=true an
# unreachable server is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tg_maintenance}
export TEST_BROKER_URL=${TEST_BROKER_URL:-redis://127.0.0.1:6379/15}
PYTEST=(.venv/bin/python -m pytest)
# The long scenarios' own test database (test_<name>) and Redis database.
export TEST_SCENARIO_DATABASE_URL=${TEST_SCENARIO_DATABASE_URL:-${TEST_DATABASE_URL}_scenarios}
if [ -z "${TEST_SCENARIO_BROKER_URL:-}" ]; then
    if [[ $TEST_BROKER_URL =~ ^(redis://.*/)([0-9]+)$ ]]; then
        number=${BASH_REMATCH[2]}
        TEST_SCENARIO_BROKER_URL="${BASH_REMATCH[1]}$((number == 14 ? 13 : 14))"
    else
        echo "set TEST_SCENARIO_BROKER_URL (a Redis database other than $TEST_BROKER_URL)" >&2
        exit 2
    fi
fi
export TEST_SCENARIO_BROKER_URL

echo "== default suite: SQLite, no server =="
DATABASE_URL="sqlite:///$PWD/var/test.sqlite3" CELERY_BROKER_URL="$TEST_BROKER_URL" \
    "${PYTEST[@]}" -m "not integration" --durations=10 "$@"
default_status=$?

echo
echo "== integration suite: PostgreSQL ($TEST_DATABASE_URL) and Redis ($TEST_BROKER_URL) =="
if reason=$(.venv/bin/python scripts/check_services.py 2>&1); then
    # The long scenarios (marker `scenario`: minutes of waiting on the clock) run beside
    # the rest, in a pytest process with a test database and a Redis database of their
    # own; their output follows the suite's. Tests that stop a database use a cluster of
    # their own (tests/integration/clusters.py), so the two never disturb each other.
    scenarios_log="$PWD/var/scenarios.log"
    mkdir -p var
    # Job control on while it starts: a background job of a script would ignore SIGINT,
    # and the traps below stop it with one (pytest then stops its celery processes).
    set -m
    DATABASE_URL="$TEST_SCENARIO_DATABASE_URL" CELERY_BROKER_URL="$TEST_SCENARIO_BROKER_URL" \
        REQUIRE_SERVICES=1 "${PYTEST[@]}" -m scenario -p no:cacheprovider \
        --basetemp="$PWD/var/pytest-scenarios" "$@" >"$scenarios_log" 2>&1 &
    scenarios_pid=$!
    set +m
    trap 'kill -INT "$scenarios_pid" 2>/dev/null' INT TERM EXIT  # make test stopped: so are they
    DATABASE_URL="$TEST_DATABASE_URL" CELERY_BROKER_URL="$TEST_BROKER_URL" REQUIRE_SERVICES=1 \
        "${PYTEST[@]}" -m "not scenario" --durations=10 "$@"
    integration_status=$?
    wait "$scenarios_pid"
    scenarios_status=$?
    trap - INT TERM EXIT
    echo
    echo "== the long scenarios, run beside it (DATABASE_URL=$TEST_SCENARIO_DATABASE_URL," \
        "CELERY_BROKER_URL=$TEST_SCENARIO_BROKER_URL) =="
    cat "$scenarios_log"
    # 5 (nothing selected) is a failure only when the arguments selected no test at all.
    if [ "$integration_status" -eq 5 ] && [ "$scenarios_status" -eq 0 ]; then
        integration_status=0
    elif [ "$scenarios_status" -ne 0 ] && [ "$scenarios_status" -ne 5 ]; then
        integration_status=$scenarios_status
    fi
elif [ "${CI:-}" = "true" ]; then
    echo "FAILED: the integration suite is required under CI, but $reason" >&2
    integration_status=1
else
    echo "SKIPPED the integration suite: $reason"
    echo "        (start them with 'make services', or set TEST_DATABASE_URL / TEST_BROKER_URL)"
    integration_status=0
fi

if [ "$default_status" -ne 0 ] || [ "$integration_status" -ne 0 ]; then
    echo "make test: FAILED (default suite exit $default_status, integration suite exit $integration_status)"
    exit 1
fi
echo "make test: passed"
