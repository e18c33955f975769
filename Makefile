# ngai_chat — `make run` serves the app, `make test` runs every test. Both set
# everything up first (virtualenv, packages, Redis and Chromium for the tests).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# Two stamps, each named after the files it installs from, so that an edit to one
# of them reinstalls: serving needs only requirements.txt and the package; the
# test and lint tools (pytest, selenium, mypy, ruff) come only for test and lint.
RUN_STAMP := $(VENV)/.run-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.dev-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint bench soak system-deps clean

$(RUN_STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	@rm -f $(VENV)/.run-* $(VENV)/.installed-*
	@touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	@rm -f $(VENV)/.dev-*
	@touch $(DEV_STAMP)

## run: serve on http://127.0.0.1:$$PORT (3000) with gunicorn + gevent; demo mode
## without a key. HOST=0.0.0.0 make run serves every interface of this machine.
run: $(RUN_STAMP)
	$(PY) -m ngai_chat

## test: install what the tests need, then run all of them
test: $(DEV_STAMP) system-deps tests/node/node_modules/.package-lock.json tests/node_ai/node_modules/.package-lock.json tests/node_openai/node_modules/.package-lock.json examples/react-chat/node_modules/.package-lock.json
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

# the Node client test's EventSource package, from tests/node/package-lock.json
tests/node/node_modules/.package-lock.json: tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

# the AI SDK tests' `ai` 5, 6 and 7 (npm aliases), from tests/node_ai/package-lock.json
tests/node_ai/node_modules/.package-lock.json: tests/node_ai/package.json tests/node_ai/package-lock.json
	npm ci --prefix tests/node_ai --no-audit --no-fund --loglevel=error

# the React example's packages (Vite, React, @ai-sdk/react), from its package-lock.json;
# the browser test builds it
examples/react-chat/node_modules/.package-lock.json: examples/react-chat/package.json examples/react-chat/package-lock.json
	npm ci --prefix examples/react-chat --no-audit --no-fund --loglevel=error

## system-deps: redis-server and Chromium + chromedriver from Debian, if missing
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# the official `openai` npm package for the /v1 door's Node test, from its package-lock.json
tests/node_openai/node_modules/.package-lock.json: tests/node_openai/package.json tests/node_openai/package-lock.json
	npm ci --prefix tests/node_openai --no-audit --no-fund --loglevel=error

lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

## bench: relay throughput and latency against a fake upstream (see bench/README.md)
bench: $(DEV_STAMP)
	$(PY) -m bench

## soak: issue 15's soak, not in CI: Redis (2 workers, a worker SIGKILLed halfway),
## then the memory store (1 worker). SOAK_MINUTES (2), SOAK_REDIS_USERS (1000),
## SOAK_MEMORY_USERS (2000); figures in bench/results/soak-*.json (bench/README.md)
SOAK_MINUTES ?= 2
SOAK_REDIS_USERS ?= 1000
SOAK_MEMORY_USERS ?= 2000
soak: $(DEV_STAMP)
	$(PY) -m bench.soak --shape redis --minutes $(SOAK_MINUTES) --users $(SOAK_REDIS_USERS)
	$(PY) -m bench.soak --shape memory --minutes $(SOAK_MINUTES) --users $(SOAK_MEMORY_USERS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
