#!/usr/bin/env bash
# eBPF overhead on a kernel that allows BPF trampolines (fexit): builds the observer's
# overhead benchmark as a static (musl) binary, boots a nested Debian guest (tests/vm) with it
# in the initramfs and prints the figures. GUEST_AGENT_VM_SERIES=6.1|6.12 (default 6.12),
# ROUNDS=n (default 6). Needs scripts/setup-vm.sh (done by `make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target x86_64-unknown-linux-musl -p freeze-observer --example overhead
GUEST_AGENT_VM_EXTRA_BINS="$PWD/target/x86_64-unknown-linux-musl/release/examples/overhead" \
    exec cargo test -p system-tests --test vm_e2e -- --ignored --nocapture ebpf_overhead_in_a_fexit_guest
