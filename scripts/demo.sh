#!/usr/bin/env bash
# `make demo`: a fresh SQLite database, a small deterministic data set, and every
# maintenance operation run inline (no broker, no server).
set -euo pipefail
cd "$(dirname "$0")/.."
manage=(.venv/bin/python manage.py)

mkdir -p var
rm -f var/demo.sqlite3
echo "== migrate (SQLite: ${DATABASE_URL}) =="
"${manage[@]}" migrate --noinput -v0
"${manage[@]}" setup_schedules

echo
echo "== create_test_data --seed 7 =="
"${manage[@]}" create_test_data --seed 7 --chronicles 6 --characters 300 --scenes 2000 \
    --defect-rate 0.02

echo
echo "== run_maintenance (the operations) =="
"${manage[@]}" run_maintenance

echo
echo "== archive_old_scenes --inline --dry-run =="
"${manage[@]}" run_maintenance archive_old_scenes --inline --dry-run

echo
echo "== archive_old_scenes --inline --batch-size 200 =="
"${manage[@]}" run_maintenance archive_old_scenes --inline --batch-size 200

echo
echo "== archive_old_scenes --inline, again: nothing left to do =="
"${manage[@]}" run_maintenance archive_old_scenes --inline --json

echo
echo "== validate_data_integrity --inline (the demo data has planted problems) =="
"${manage[@]}" run_maintenance validate_data_integrity --inline

echo
echo "== validate_data_integrity --inline --fix --no-input =="
"${manage[@]}" run_maintenance validate_data_integrity --inline --fix --no-input

echo
echo "== recalculate_xp --inline =="
"${manage[@]}" run_maintenance recalculate_xp --inline

echo
echo "== validate_data_integrity --inline, again: only what cannot be fixed is left =="
"${manage[@]}" run_maintenance validate_data_integrity --inline

fix_run=$("${manage[@]}" maintenance_run list --operation validate_data_integrity --json \
    | .venv/bin/python -c 'import json, sys; print(next(r["run_id"] for r in json.load(sys.stdin) if r["changed"]))')
echo
echo "== maintenance_run revert $fix_run --inline --dry-run: what undoing the fix would restore =="
"${manage[@]}" maintenance_run revert "$fix_run" --inline --dry-run

echo
echo "== export_characters --output var/demo-characters.jsonl =="
"${manage[@]}" export_characters --output var/demo-characters.jsonl
head -c 300 var/demo-characters.jsonl; echo " ..."

echo
echo "== import_characters var/demo-characters.jsonl: already there, so nothing changes =="
"${manage[@]}" import_characters var/demo-characters.jsonl

echo
echo "== monitor_validation (no beat runs in the demo, so the heartbeat is missing) =="
"${manage[@]}" monitor_validation || echo "(exit code $?: Nagios WARNING=1, CRITICAL=2)"
