# `make help` lists the targets. Every command here runs from .venv (made on first use); none needs an
# activated virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help install run test lint bench bench-tools clean sandbox-clean demo-charge

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# Runtime dependencies (production); the test tools come on top of them.
$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.runtime ## .venv with the runtime dependencies only, for a server

run: $(BIN)/.installed ## serve on http://127.0.0.1:5000 (PORT=...): the sandbox without STRIPE_SECRET_KEY
	$(BIN)/python -m refunds.serve

test: $(BIN)/.installed ## ruff, mypy and the whole suite (PostgreSQL too when TEST_DATABASE_URL is set)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(BIN)/.installed ## ruff and mypy only
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/.installed bench-tools ## the service against a bare baseline under wrk, ~4 min (BENCH_ARGS=--help)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# wrk is a Debian package, not a Python one: installed with apt-get when run as root, else asked for.
bench-tools:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }; }; } \
		|| { echo "make bench needs wrk: sudo apt-get install wrk (Debian, Ubuntu) or brew install wrk" >&2; exit 1; }

demo-charge: $(BIN)/.installed ## a new charge in the running sandbox: make demo-charge AMOUNT=20000 CURRENCY=usd
	$(BIN)/python -m refunds.sandbox charge $(or $(AMOUNT),20000) $(or $(CURRENCY),usd)

sandbox-clean: ## forget the sandbox: its database, Stripe stand-in state and tokens (sandbox/)
	rm -rf sandbox

clean: sandbox-clean ## remove .venv, the caches and the sandbox's data
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
