#!/usr/bin/env bash
# Runs the benchmark binary (already built in release mode with the cqrs-es baseline) against
# two PostgreSQL servers: DATABASE_URL (test settings) and DURABLE_DATABASE_URL (fsync,
# synchronous_commit and full_page_writes on). Each one not given is a throw-away cluster
# started here (`scripts/pg-tmp start`, `start --durable`) and stopped on exit.
#
#   benches/run.sh [--quick] [other benchmark flags…]
#
# Without PostgreSQL binaries the PostgreSQL scenarios are reported as not run; with only one of
# the two servers the durable mode of scenarios 3 and 4 is reported as not run, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

clusters=()
cleanup() {
    local url
    for url in "${clusters[@]}"; do
        scripts/pg-tmp stop "$url" || true
        echo "bench: stopped the throw-away PostgreSQL at $url" >&2
    done
    clusters=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts a throw-away cluster (pg-tmp flags in "$@") and prints its URL; exit status 3 when
# there are no PostgreSQL binaries.
start_cluster() {
    scripts/pg-tmp start --owner $$ "$@"
}

if [[ -z "${DATABASE_URL:-}" ]]; then
    status=0
    url=$(start_cluster) || status=$?
    if ((status == 0)); then
        clusters+=("$url")
        export DATABASE_URL=$url
    elif ((status == 3)); then
        echo "bench: no PostgreSQL binaries; PostgreSQL scenarios will not run" >&2
    else
        echo "bench: could not start a throw-away PostgreSQL" >&2
        exit 1
    fi
fi

if [[ -z "${DURABLE_DATABASE_URL:-}" && -n "${DATABASE_URL:-}" ]]; then
    status=0
    url=$(start_cluster --durable) || status=$?
    if ((status == 0)); then
        clusters+=("$url")
        export DURABLE_DATABASE_URL=$url
    else
        # The benchmark binary reports the durable mode as not run.
        echo "bench: could not start a durable throw-away PostgreSQL; durable mode will not run" >&2
    fi
fi

start=$(date +%s)
"$CARGO" run --release -q -p benchmarks --features cqrs-baseline,jemalloc -- "$@"
echo "bench: $(($(date +%s) - start)) s (excluding the build)"
