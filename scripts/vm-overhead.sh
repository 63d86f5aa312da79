#!/usr/bin/env bash
# eBPF freeze hooks on a kernel that allows BPF trampolines (fexit): builds the observer's
# overhead benchmark and freeze coverage count as static (musl) binaries, boots a nested
# Debian guest (tests/vm) with them in the initramfs and prints the figures.
# GUEST_AGENT_VM_SERIES=6.1|6.12 (default 6.12), FREEZE_HOOK=auto|fexit|sync-fs|ioctl|none
# (default auto = fexit there), ROUNDS=n (default 6), GUEST_AGENT_VM_ICOUNT=shift (qemu -icount:
# the guest's clocks count instructions, so the host's load does not move the ratios; slower).
# Needs scripts/setup-vm.sh (`make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target x86_64-unknown-linux-musl -p freeze-observer --example overhead --example coverage
cargo build -p guestctl  # the host side of the test (it prepares the guest's volume with it)
bins="$PWD/target/x86_64-unknown-linux-musl/release/examples"
GUEST_AGENT_VM_EXTRA_BINS="$bins/overhead $bins/coverage" \
    exec cargo test -p system-tests --test vm_e2e -- --ignored --nocapture ebpf_hooks_in_a_guest
