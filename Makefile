# chatsvc: `make run` serves it on http://127.0.0.1:8000, `make test` runs the whole suite on PostgreSQL.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatsvc

.PHONY: run test test-deps lint check format bench screenshot clean

$(VENV)/.run: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.run

run: export DEBUG ?= true
run: $(VENV)/.run
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_demo --host $(HOST) --port $(PORT)
	$(VENV)/bin/daphne -e tcp:port=$(PORT):interface=$(HOST):backlog=4096 chatsvc.asgi:application

# What the tests need beyond the virtualenv (Chromium, the AI SDK tests' Node packages): bin/test-deps
# installs what is missing, or says in one line what to install.
test-deps:
	bin/test-deps

test: $(VENV)/.dev test-deps
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The system checks (ASGI servers run none) and migrations in step with the models, with PostgreSQL's
# settings: any reachable database will do (makemigrations only reads its migration history).
CHECK_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
check: export DEBUG ?= true
check: $(VENV)/.dev
	DATABASE_URL=$(CHECK_DATABASE_URL) $(PY) manage.py check --fail-level WARNING
	DATABASE_URL=$(CHECK_DATABASE_URL) $(PY) manage.py makemigrations --check --dry-run

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# docs/screenshot.png: the chat page in Chromium, an answer being typed (chatsvc/tests/screenshot.py).
screenshot: $(VENV)/.dev test-deps
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m pytest -q -p no:cacheprovider chatsvc/tests/screenshot.py

# The benchmark (bench/run.py): its own database, real servers pinned to core 0, the client on core 1.
# BENCH_ARGS="--quick" for a smoke run, "--profile" to add a py-spy profile, "--baseline <ref>" to compare
# with another commit; BENCH_ROUNDS=… and co. for counts. R alone: `.venv/bin/python -m bench.r_alone 200`.
bench: $(VENV)/.dev
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
