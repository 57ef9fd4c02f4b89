# tg-maintenance: `make demo` shows it working, `make test` proves it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_DB := $(CURDIR)/var/demo.sqlite3

.PHONY: setup demo test lint format web worker beat services bench clean

setup: $(INSTALLED)

# Re-installs only when pyproject.toml changes, so `make setup` is cheap to repeat.
$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(INSTALLED)

# The demo runs on its own SQLite file, made anew each time, with no server at all.
demo: setup
	DATABASE_URL=sqlite:///$(DEMO_DB) bash scripts/demo.sh

# Both suites: SQLite always; PostgreSQL + Redis + real celery processes when reachable.
test: setup
	bash scripts/test.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

web: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py setup_schedules
	$(BIN)/python manage.py runserver 127.0.0.1:8000

worker: setup
	$(BIN)/celery -A worker worker -Q maintenance --loglevel=INFO

beat: setup
	$(BIN)/celery -A worker beat --loglevel=INFO --scheduler maintenance.schedules:MaintenanceScheduler

# Starts the local PostgreSQL and Redis where they are installed (Debian packages).
services:
	bash scripts/services.sh

# PostgreSQL only; a few minutes at 100k scenes, about 15 at 1M. Results: benchmarks/results/.
bench: setup services
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.scaling

clean:
	rm -rf var .pytest_cache .ruff_cache
