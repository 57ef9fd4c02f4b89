"""Exit 0 when the test PostgreSQL and Redis answer; else print why and exit 1.

Used by scripts/test.sh to decide whether the integration suite can run.
"""

import os
import sys

import environ
import psycopg
import redis


def problems():
    found = []
    database = environ.Env.db_url_config(os.environ["TEST_DATABASE_URL"])
    try:
        psycopg.connect(
            host=database["HOST"] or None,
            port=database["PORT"] or None,
            user=database["USER"] or None,
            password=database["PASSWORD"] or None,
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg.Error as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        found.append(f"PostgreSQL is unreachable ({first_line})")
    try:
        redis.Redis.from_url(os.environ["TEST_BROKER_URL"], socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        found.append(f"Redis is unreachable ({error})")
    return found


if __name__ == "__main__":
    found = problems()
    if found:
        print("; ".join(found))
        sys.exit(1)
