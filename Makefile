# The README's commands. Each target installs what it needs first (uv, the locked environment).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

# Debian packages the tests need: Chromium for the browser tests (Playwright drives it; no
# browser is ever downloaded).
APT_PACKAGES := chromium

.PHONY: setup system-packages run test test-fast lint format bench clean

# Bootstrap uv (from PyPI), then create .venv exactly as uv.lock says.
.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen
	@touch $@

setup: .venv/.synced

# Installs the missing Debian packages (as root, or with sudo when available).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
		echo "installing Debian packages:$$missing"; \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## run: start the platform on embedded defaults (Ctrl-C stops it)
run: setup
	$(UV) run --frozen datalab up

## test: lint, then the whole test suite (unit, API, real servers)
test: setup system-packages lint
	$(UV) run --frozen pytest

## test-fast: lint, then the tests that start no real server (seconds, not minutes)
test-fast: setup lint
	$(UV) run --frozen pytest -m "not slow"

lint: setup
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench

format: setup
	$(UV) run --frozen ruff check --fix src tests bench
	$(UV) run --frozen ruff format src tests bench

## bench: benchmarks; results go to bench/results/
bench: setup
	$(UV) run --frozen python -m bench

clean:
	rm -rf .venv .pytest_cache .ruff_cache bench/results test-artifacts
