# Two commands do everything on a fresh Debian 12 machine (as root):
#   make run    build and start guest-agent with development defaults
#   make test   set up, lint, build, and run every test
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup build lint unit-test system-test test run clean-scratch

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: setup lint build
	$(CARGO) test --workspace --no-fail-fast

run: setup
	$(CARGO) build --workspace
	@scripts/run-dev.sh

clean-scratch:
	@scripts/run-dev.sh --clean-only
