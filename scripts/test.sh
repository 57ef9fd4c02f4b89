#!/usr/bin/env bash
# The test command of the README (`make test`). Two suites:
#   1. the default suite on SQLite, with no server;
#   2. the whole suite again on PostgreSQL with Redis, including the integration tests
#      that start real celery worker and beat processes.
# The second is skipped, and says so, when the servers are unreachable; under CI=true an
# unreachable server is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tg_maintenance}
export TEST_BROKER_URL=${TEST_BROKER_URL:-redis://127.0.0.1:6379/15}
PYTEST=(.venv/bin/python -m pytest)

echo "== default suite: SQLite, no server =="
DATABASE_URL="sqlite:///$PWD/var/test.sqlite3" CELERY_BROKER_URL="$TEST_BROKER_URL" \
    "${PYTEST[@]}" -m "not integration" "$@"
default_status=$?

echo
echo "== integration suite: PostgreSQL ($TEST_DATABASE_URL) and Redis ($TEST_BROKER_URL) =="
if reason=$(.venv/bin/python scripts/check_services.py 2>&1); then
    DATABASE_URL="$TEST_DATABASE_URL" CELERY_BROKER_URL="$TEST_BROKER_URL" REQUIRE_SERVICES=1 \
        "${PYTEST[@]}" "$@"
    integration_status=$?
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
