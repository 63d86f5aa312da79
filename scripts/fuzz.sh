#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS, default 60) on the committed
# corpus. Anything found fails the run; fix it and add the input as a regression test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${FUZZ_SECONDS:-60}"
rustup component list --toolchain nightly --installed 2>/dev/null | grep -q rust-src \
    || rustup component add rust-src --toolchain nightly
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$root/fuzz"
for t in mountinfo init_request hybrid_reply h2_authority; do
    mkdir -p "corpus/$t"
    # Work on a copy so new inputs libFuzzer finds do not dirty the committed corpus.
    work="$(mktemp -d /var/tmp/fuzz-$t-XXXX)"
    cp -r "corpus/$t/." "$work/"
    echo "fuzz: $t for ${secs}s"
    log="$work.log"
    status=0
    cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E 'stat::number_of_executed_units|stat::new_units_added|ERROR|panicked|SUMMARY' "$log" || true
    [[ $status -eq 0 ]] || tail -40 "$log"
    rm -rf "$work" "$log"
    if [[ $status -ne 0 ]]; then
        echo "fuzz: $t FAILED (see fuzz/artifacts/$t)" >&2
        exit 1
    fi
done
echo "fuzz: ok"
