#!/usr/bin/env bash
# Start the local PostgreSQL and Redis (Debian packages) if they are installed and stopped.
set -uo pipefail

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "PostgreSQL: running"
elif command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start && echo "PostgreSQL: started"
else
    echo "PostgreSQL: not installed (apt-get install postgresql)"
fi

if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Redis: running"
elif command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        && echo "Redis: started"
else
    echo "Redis: not installed (apt-get install redis-server)"
fi

for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0
    sleep 1
done
exit 0
