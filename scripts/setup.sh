#!/usr/bin/env bash
# One-time (and idempotent) set-up of a fresh Debian 12 machine for building, running and
# testing the guest agent. Fast when everything is already present: it only checks.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

# Debian packages: filesystems to test against, loop/freeze tools, netlink tools for the
# network tests, Prometheus/promtool and qemu-guest-agent for telemetry tests and benchmarks.
apt_pkgs=(e2fsprogs xfsprogs btrfs-progs util-linux iproute2 kmod prometheus qemu-guest-agent
          bpftool jq curl ca-certificates build-essential pkg-config)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=""; [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts prometheus as a service on install; the tests start their own instances.
    $sudo_cmd systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt

# The eBPF tool chain (nightly rust-src, bpf-linker), when the eBPF crates are present.
if [[ -x "$here/setup-ebpf.sh" ]]; then
    "$here/setup-ebpf.sh"
fi

# Guest kernels, busybox, qemu and vhost-device-vsock for the nested-VM tests (cached).
if [[ -x "$here/setup-vm.sh" ]]; then
    "$here/setup-vm.sh"
fi
"$here/setup-clients-go.sh"   # Debian's Go gRPC + protoc plugins for the Go conformance client
"$here/setup-clients-python.sh"   # venv with pinned grpcio packages for the Python conformance client

# cargo-fuzz and the nightly's rust-src for the bounded fuzz run in `make test`.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Loop devices for the tests.
modprobe loop 2>/dev/null || true
echo "setup: ok"
