#!/usr/bin/env bash
# Long reliability runs against the real binaries (as root: loop devices, FIFREEZE):
#   soak    SOAK_CYCLES Quiesce/Thaw cycles (default 1000) with four checksummed-record
#           writers and four ping clients; every acknowledged record verified from disk;
#           agent RSS and open fds sampled (start/middle/end) and bounded.
#   stress  sixteen random clients for STRESS_SECONDS (default 60): no double freeze, no
#           thaw of a foreign freeze, consistent answers.
# `make test` runs the same tests shorter (100 cycles, 20 s). The figures lines (soak:, stress:)
# are printed at the end and kept with the full output in target/reliability/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cycles="${SOAK_CYCLES:-1000}"
secs="${STRESS_SECONDS:-60}"
mkdir -p target/reliability
log="target/reliability/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
cargo build --workspace
echo "soak.sh: ${cycles} cycles, stress ${secs} s; full output in ${log}"
start=$(date +%s)
status=0
SOAK_CYCLES="$cycles" STRESS_SECONDS="$secs" \
    cargo test -p system-tests --test soak --test stress -- --nocapture --test-threads 1 \
    >"$log" 2>&1 || status=$?
echo "soak.sh: finished in $(( $(date +%s) - start )) s (exit ${status})"
grep -aE '^(soak|stress):|^test |test result|panicked|violations' "$log" || true
exit "$status"
