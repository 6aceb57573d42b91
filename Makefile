# Two commands for a new user: `make up` and `make test`.
# The interpreter runs every service, so its build matters: distributions build CPython
# with PGO and LTO (Debian's /usr/bin/python3.11), pyenv's default build has neither, and
# on it the stack spent 15 % more CPU per no-op job (3.09 against 2.68 ms). The
# distribution's python3.11 is taken when it can make a virtualenv; PYTHON=... picks another.
PYTHON ?= $(firstword $(foreach p,/usr/bin/python3.11,$(if $(shell $(p) -c 'import ensurepip' 2>/dev/null && echo y),$(p))) python3.11)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test test-cluster lint lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs exactly what the lock files pin; the project itself goes in without deps.
$(VENV)/.installed: $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

up: $(VENV)/.installed
	@$(BIN)/python -m services.embedded.sandbox_setup || true
	$(BIN)/clinai up $(ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(ARGS)

# The fault tests on a cluster on one machine (3 NATS nodes, 2 of each service): minutes.
test-cluster: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m cluster tests/cluster $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

# Regenerate the lock files after changing dependencies in pyproject.toml.
lock: $(BIN)/python
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements-dev.lock

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .clinai .pytest_cache
