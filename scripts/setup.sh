#!/usr/bin/env bash
# One-time (and idempotent) set-up of a fresh Debian 12 machine for building, running and
# testing the guest agent. Fast when everything is already present: it only checks.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

# Debian packages: filesystems to test against, loop/freeze tools, netlink tools for the
# network tests, Prometheus/promtool and qemu-guest-agent for telemetry tests and benchmarks.
apt_pkgs=(e2fsprogs xfsprogs btrfs-progs util-linux iproute2 kmod prometheus qemu-guest-agent
          bpftool jq curl ca-certificates build-essential pkg-config)
prometheus_was_installed=$(dpkg-query -W -f='${Status}' prometheus 2>/dev/null || true)
"$here/apt-ensure.sh" setup "${apt_pkgs[@]}"
if [[ $prometheus_was_installed != *"install ok installed"* ]]; then
    # Debian starts prometheus as a service on install; the tests start their own instances.
    sudo_cmd=""; [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"
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
"$here/setup-otel-collector.sh"   # Rotel (PyPI), the OpenTelemetry collector of the OTLP relay test

# cargo-fuzz and the nightly's rust-src for the bounded fuzz run in `make test`.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Loop devices for the tests.
modprobe loop 2>/dev/null || true
echo "setup: ok"
