#!/usr/bin/env bash
# Runs every cargo-fuzz target of spool-format for a bounded time (opt-in; not
# part of .ci/run). Usage: scripts/fuzz.sh [seconds-per-target, default 60]
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/../spool-format"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes nightly-only flags; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1 (this machine has only the stable toolchain).
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "== fuzzing $target for ${secs}s"
  cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
