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

# The power-cut tests mount the project's FUSE file system
# (crates/test-support/src/powercut.rs): /dev/fuse and, for unprivileged
# mounts, fusermount3 from Debian's fuse3.
ensure_fuse() {
  if ! command -v fusermount3 >/dev/null 2>&1; then
    echo "test.sh: installing fuse3 from Debian's packages (power-cut tests)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
  fi
  if [ ! -e /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
  fi
}

ensure_postgres
ensure_fuse
# The database the tests use (trust auth on this machine).
if ! psql -h 127.0.0.1 -U postgres -Atqc "select 1 from pg_database where datname = 'test'" postgres | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "create database test" postgres
fi

# schemathesis (PyPI) checks docs/openapi/*.yaml against the real daemons
# (tests/it/openapi.rs). Installed once, pinned, into a virtual environment in
# the target directory; without it that test fails when CI is set.
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV="${CARGO_TARGET_DIR:-target}/schemathesis-venv"
if ! "$SCHEMATHESIS_VENV/bin/schemathesis" --version >/dev/null 2>&1; then
  echo "test.sh: installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV" >&2
  python3 -m venv "$SCHEMATHESIS_VENV" && "$SCHEMATHESIS_VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" \
    || echo "test.sh: could not install schemathesis; tests/it/openapi.rs will say so" >&2
fi
export OFFGRID_SCHEMATHESIS="$(cd "$(dirname "$SCHEMATHESIS_VENV")" && pwd)/$(basename "$SCHEMATHESIS_VENV")/bin/schemathesis"
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
# spoolctl as child processes. The daemons are built with failpoints (the
# power-cut control runs skip or fail the fsync through FAILPOINTS); cargo
# test gets the same features so that it does not rebuild them without.
features="spoold/failpoints,ledger/failpoints"
cargo build --workspace --locked --bins --features "$features"
cargo test --workspace --locked --no-fail-fast --features "$features" -- --test-threads="${OFFGRID_TEST_THREADS:-2}"
