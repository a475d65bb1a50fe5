# Entry points for developers and CI. `make test` is what CI runs (through .ci/run).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo

.PHONY: help test fmt-check clippy test-only run bench bench-quick soak

help:
	@echo "make run          run the sample app's demo"
	@echo "make test         fmt check, clippy, then every test (PostgreSQL ones on a throw-away cluster)"
	@echo "make bench        every benchmark scenario; writes benches/REPORT.md and benches/recovery.svg"
	@echo "make bench-quick the same scenarios at smaller sizes (under 3 minutes after the build)"
	@echo "make soak         long fault-injection runs (ignored by make test)"

test: fmt-check clippy test-only

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Uses DATABASE_URL when set; otherwise scripts/pg-tmp starts a throw-away cluster for the run
# and stops it however the run ends. Without PostgreSQL binaries the PostgreSQL tests are
# skipped with the install line printed, except with CI=true, where that is a failure.
test-only:
	scripts/pg-tmp run -- $(CARGO) test --workspace

run:
	$(CARGO) run --release -p sample-app -- demo

# Benchmarks in release mode with the cqrs-es baseline; each writes benches/REPORT.md and
# benches/recovery.svg. PostgreSQL: DATABASE_URL when set, otherwise benches/run.sh starts a
# throw-away cluster and stops it on exit (trap). bench-quick takes under 3 minutes after the build.
bench:
	$(CARGO) build --release -p benchmarks --features cqrs-baseline
	CARGO="$(CARGO)" benches/run.sh

bench-quick:
	$(CARGO) build --release -p benchmarks --features cqrs-baseline
	CARGO="$(CARGO)" benches/run.sh --quick

# Long fault runs (e.g. 200 SIGKILLs of a loaded worker), marked #[ignore] so `make test` stays short.
soak:
	scripts/pg-tmp run -- $(CARGO) test --release -p integration-tests -- --ignored --nocapture
