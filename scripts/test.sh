#!/usr/bin/env bash
# The test command (README, .ci/run): makes sure the local PostgreSQL the ledger
# store tests use is up, then runs the whole workspace's tests, including the
# end-to-end and crash tests that start the real spoold and ledgerd binaries.
#
# Environment:
#   OFFGRID_PG_URL   PostgreSQL for the store tests
#                         (default postgres://postgres@127.0.0.1:5432/test)
#   OFFGRID_SLOW_TESTS=1  also run the long variants (crash loops at full scale)
set -euo pipefail
cd "$(dirname "$0")/.."

export OFFGRID_PG_URL="${OFFGRID_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    return 0
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "test.sh: PostgreSQL is not installed; installing it from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  echo "test.sh: starting PostgreSQL $version" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 1
  done
  echo "test.sh: PostgreSQL did not come up on 127.0.0.1:5432" >&2
  return 1
}

ensure_postgres
# The database the tests use (trust auth on this machine).
if ! psql -h 127.0.0.1 -U postgres -Atqc "select 1 from pg_database where datname = 'test'" postgres | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "create database test" postgres
fi

# promtool for the alert-rule tests (tests/it/observability.rs): from PATH, or
# unpacked from Debian's prometheus package into the target dir (no install,
# no service). The test fails without it when CI is set.
ensure_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  local tools="${CARGO_TARGET_DIR:-target}/tools"
  if [ ! -x "$tools/prometheus/usr/bin/promtool" ]; then
    echo "test.sh: promtool not found; unpacking Debian's prometheus package into $tools" >&2
    mkdir -p "$tools/debs"
    (cd "$tools/debs" && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; })
    dpkg-deb -x "$(ls "$tools"/debs/prometheus_*.deb | tail -n 1)" "$tools/prometheus"
  fi
  OFFGRID_PROMTOOL="$(cd "$tools/prometheus/usr/bin" && pwd)/promtool"
  export OFFGRID_PROMTOOL
}
ensure_promtool

# Build every binary first: the end-to-end tests start spoold, ledgerd and
# spoolctl as child processes.
cargo build --workspace --locked --bins
cargo test --workspace --locked --no-fail-fast -- --test-threads="${OFFGRID_TEST_THREADS:-2}"
