#!/usr/bin/env bash
# Runs the benchmark binary (already built in release mode with the cqrs-es baseline) against
# DATABASE_URL, or against a throw-away PostgreSQL cluster started here and stopped on exit.
#
#   benches/run.sh [--quick] [other benchmark flags…]
#
# Without PostgreSQL binaries the PostgreSQL scenarios are reported as not run.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

cluster=""
cleanup() {
    if [[ -n "$cluster" ]]; then
        scripts/pg-tmp stop "$cluster" || true
        echo "bench: stopped the throw-away PostgreSQL" >&2
        cluster=""
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z "${DATABASE_URL:-}" ]]; then
    status=0
    url=$(scripts/pg-tmp start --owner $$) || status=$?
    if ((status == 0)); then
        cluster=$url
        export DATABASE_URL=$url
    elif ((status == 3)); then
        echo "bench: no PostgreSQL binaries; PostgreSQL scenarios will not run" >&2
    else
        echo "bench: could not start a throw-away PostgreSQL" >&2
        exit 1
    fi
fi

start=$(date +%s)
"$CARGO" run --release -q -p benchmarks --features cqrs-baseline -- "$@"
echo "bench: $(($(date +%s) - start)) s (excluding the build)"
