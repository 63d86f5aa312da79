#!/usr/bin/env bash
# The Python gRPC client of the conformance tests (tests/tests/client_python.rs): a venv at a
# fixed path with pinned grpcio packages from PyPI, whatever `python3` on PATH happens to be
# (pyenv shims, a CI image's own Python). Built on Debian's /usr/bin/python3 (python3-venv),
# which apt keeps at that path. Idempotent: a fast check when the venv holds exactly these
# versions; rebuilt when it is broken (its base interpreter gone) or holds other versions.
#
#   GUEST_AGENT_PY_VENV   where the venv lives (default /opt/guest-agent-test/py); the test
#                         reads the same variable, or GUEST_AGENT_PYTHON for an interpreter.
set -euo pipefail

venv="${GUEST_AGENT_PY_VENV:-/opt/guest-agent-test/py}"
base=/usr/bin/python3
# grpcio-tools 1.85.1 is the newest grpcio-tools; grpcio is kept at the same release.
pins=(
    grpcio==1.85.1
    grpcio-tools==1.85.1
    grpcio-health-checking==1.85.1
    grpcio-reflection==1.85.1
    protobuf==7.36.2
    typing_extensions==4.16.0
)

# Does the venv hold exactly the pinned versions? (Runs the venv's interpreter: also fails
# when its base interpreter is gone.)
pins_ok() {
    [[ -x "$venv/bin/python" ]] || return 1
    "$venv/bin/python" - "${pins[@]}" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2_grpc, grpc_reflection.v1alpha.proto_reflection_descriptor_database
EOF
}

# The tools the test needs besides the venv: openssl makes its TLS certificates.
apt_pkgs=(python3 python3-venv openssl)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo_cmd=""; [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"
if ((${#missing[@]})); then
    echo "setup-clients-python: installing ${missing[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pins_ok && exit 0

echo "setup-clients-python: building $venv (${pins[*]})"
if [[ -e "$venv" ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    # A venv whose base interpreter is gone cannot be repaired in place.
    $sudo_cmd rm -rf "$venv"
fi
$sudo_cmd mkdir -p "$(dirname "$venv")"
[[ -x "$venv/bin/python" ]] || $sudo_cmd "$base" -m venv "$venv"
$sudo_cmd "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q "${pins[@]}"
pins_ok || { echo "setup-clients-python: $venv does not hold ${pins[*]} after pip install" >&2; exit 1; }
echo "setup-clients-python: $venv ready ($("$venv/bin/python" --version))"
