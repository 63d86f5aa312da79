#!/usr/bin/env bash
# mkpybundle.sh: the read-only Python disk of the VM tests (the vsock row of issue 12's client
# matrix: a grpc-core client inside the guest calls the agent over AF_VSOCK loopback).
#
# Prints, on its last line, the path of an ext4 image that holds, under its root (mounted at
# /py in the guest):
#   bin/python3      Debian's python3 (the interpreter of the client venv), unchanged
#   bin/python       the way to run it: a sh wrapper that starts bin/python3 through the bundled
#                    loader with --library-path lib and PYTHONHOME/PYTHONPATH set (the guest is a
#                    busybox initramfs without a C library of its own)
#   lib/             ld-linux-x86-64.so.2 and every shared library ldd lists for the interpreter
#                    and the extension modules
#   lib/python3.X/   the standard library (without test/, idlelib, tkinter, ensurepip, lib2to3,
#                    pydoc_data, the static libpython, and extension modules needing libraries the
#                    client never loads: curses, readline, dbm, sqlite, nis)
#   site/            `pip install --target` of grpcio, protobuf, typing_extensions and
#                    grpcio-health-checking at the versions scripts/setup-clients-python.sh pins
#                    (read from its venv; grpcio built from source, see below), byte-compiled
#   app/             the stubs grpc_tools.protoc generates from proto/boxlite/v1/guest.proto, and
#                    tests/vm/vsock_client.py
#
# Cached under $GUEST_AGENT_VM_CACHE/python (default /var/cache/guest-agent-vm):
#   wheels/             grpcio built from its source distribution (see below)
#   runtime-<key>/      bin, lib, site: keyed by this script, the interpreter binary and the
#                       package versions (pip downloads: run once, by scripts/setup-vm.sh)
#   bundle-<key>.img    the image: keyed by the runtime, this script, the client, the .proto
#                       and grpcio-tools' version (no network; a second or two)
# A second run with nothing changed only hashes its inputs. Concurrent runs (two VMs, two test
# processes) are serialised by a lock; older runtimes and images are pruned.
#
# Which grpcio (GUEST_AGENT_PY_GRPCIO):
#   sdist  (default) the pinned version built by pip from PyPI's source distribution on this
#          machine (Debian 12, glibc 2.36: grpc-core's vsock resolver is compiled in), with the
#          system's OpenSSL and zlib, -O1 -g0, cached in $GUEST_AGENT_VM_CACHE/python/wheels.
#          It compiles ~1,270 C/C++ files: about 25 minutes on 2 busy cores, once per machine
#          (scripts/setup-vm.sh runs this script, so no test waits for it).
#   wheel  PyPI's binary wheel of the pinned version, as pip installs it anywhere. It is a
#          manylinux2014 build (glibc 2.17), and grpc-core compiles its `vsock:` resolver only
#          against glibc >= 2.18 (GRPC_HAVE_VSOCK in src/core/lib/iomgr/port.h): with it,
#          `vsock:CID:PORT` is not a known scheme and falls through to DNS, so the VM test's
#          vsock step fails (and says why).
#
# Environment: GUEST_AGENT_VM_CACHE, GUEST_AGENT_PY_VENV (the client venv,
# default /opt/guest-agent-test/py), GUEST_AGENT_PY_GRPCIO.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${GUEST_AGENT_VM_CACHE:-/var/cache/guest-agent-vm}"
venv="${GUEST_AGENT_PY_VENV:-/opt/guest-agent-test/py}"
dir="$cache/python"
client="$here/vsock_client.py"
proto_root="$root/proto"
proto="$proto_root/boxlite/v1/guest.proto"

log() { echo "mkpybundle: $*" >&2; }
die() { echo "mkpybundle: $*" >&2; exit 1; }

# The client venv (pinned grpcio, grpcio-tools, protobuf from PyPI): idempotent, a quick check
# when present.
"$root/scripts/setup-clients-python.sh" >&2
[[ -x $venv/bin/python ]] || die "no Python venv at $venv (scripts/setup-clients-python.sh)"
command -v mke2fs >/dev/null || die "mke2fs is missing (e2fsprogs; run scripts/setup-vm.sh)"

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9

# The interpreter the venv runs on (Debian's /usr/bin/python3.X): the wheels match its ABI.
python=$(readlink -f "$venv/bin/python")
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
# Runtime packages at the versions the venv holds (scripts/setup-clients-python.sh pins them).
mapfile -t pins < <("$venv/bin/python" - <<'EOF'
from importlib.metadata import version
for name in ("grpcio", "protobuf", "typing_extensions", "grpcio-health-checking"):
    print(f"{name}=={version(name)}")
EOF
)
tools_version=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("grpcio-tools"))')
grpcio_pin=${pins[0]}
grpcio_mode="${GUEST_AGENT_PY_GRPCIO:-sdist}"

# has_vsock_resolver SO: whether a cygrpc extension holds grpc-core's vsock resolver factory.
has_vsock_resolver() { grep -qa VSockResolverFactory "$1"; }

# grpcio_from_sdist: the path of a wheel of $grpcio_pin built from its source distribution
# (built once, then cached).
grpcio_from_sdist() {
    local wheels="$dir/wheels" ver=${grpcio_pin#grpcio==} whl
    whl=$(find "$wheels" -maxdepth 1 -name "grpcio-$ver-cp${pyver/./}-*.whl" 2>/dev/null | head -1)
    if [[ -z $whl ]]; then
        "$root/scripts/apt-ensure.sh" mkpybundle build-essential python3-dev libssl-dev zlib1g-dev
        local t0=$SECONDS build
        build=$(mktemp -d "$dir/sdist.XXXXXX")
        log "building $grpcio_pin from its source distribution (tens of minutes, once)"
        GRPC_PYTHON_BUILD_EXT_COMPILER_JOBS=$(nproc) CFLAGS="-O1 -g0" CXXFLAGS="-O1 -g0" \
            GRPC_PYTHON_BUILD_SYSTEM_OPENSSL=1 GRPC_PYTHON_BUILD_SYSTEM_ZLIB=1 \
            "$venv/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-input \
            --no-deps --no-binary grpcio -w "$build" "$grpcio_pin" >&2 ||
            { rm -rf "$build"; die "building $grpcio_pin from source failed"; }
        whl=$(find "$build" -maxdepth 1 -name 'grpcio-*.whl' | head -1)
        [[ -n $whl ]] || die "pip wheel left no grpcio wheel in $build"
        mkdir -p "$wheels"
        mv "$whl" "$wheels/"
        whl="$wheels/$(basename "$whl")"
        rm -rf "$build"
        log "$(basename "$whl") built in $((SECONDS - t0)) s"
    fi
    echo "$whl"
}

case $grpcio_mode in
    wheel) grpcio_spec=$grpcio_pin ;;
    sdist) grpcio_spec=$(grpcio_from_sdist); pins[0]=$grpcio_spec ;;
    *) die "GUEST_AGENT_PY_GRPCIO must be wheel or sdist, not $grpcio_mode" ;;
esac

hash_of() { sha256sum | cut -c1-16; }
runtime_key=$({
    sha256sum "$0" "$python"
    printf '%s\n' "$pyver" "${pins[@]}"
    [[ $grpcio_mode == wheel ]] || sha256sum "$grpcio_spec"
} | hash_of)
runtime="$dir/runtime-$runtime_key"

# prune PATTERN KEEP: removes all but the KEEP newest entries matching PATTERN in $dir (images
# in use by a running qemu stay readable: it holds them open).
prune() {
    local pattern=$1 keep=$2
    find "$dir" -maxdepth 1 -name "$pattern" -printf '%T@ %p\n' | sort -rn | tail -n +"$((keep + 1))" |
        cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
}

build_runtime() {
    local t0=$SECONDS out="$1"
    mkdir -p "$out"/{bin,lib,site}
    cp "$python" "$out/bin/python3"

    # The standard library, minus what a gRPC client never imports.
    cp -a "$stdlib" "$out/lib/python$pyver"
    local std="$out/lib/python$pyver"
    rm -rf "$std"/{test,idlelib,tkinter,turtledemo,ensurepip,lib2to3,pydoc_data,site-packages,dist-packages}
    rm -rf "$std"/config-*
    find "$std/lib-dynload" -regextype posix-extended -regex \
        '.*/(_test[a-z_]*|xxlimited[_0-9]*|_xx[a-z]*|_curses[a-z_]*|readline|_dbm|_gdbm|nis|ossaudiodev|_sqlite3|_ctypes_test|_tkinter)\..*so' \
        -delete

    # The runtime packages from PyPI, as the host's venv has them.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --no-deps --no-compile --only-binary=:all: --target "$out/site" "${pins[@]}" >&2
    rm -rf "$out/site/bin"
    local cygrpc vsock=without
    cygrpc=$(find "$out/site/grpc/_cython" -name 'cygrpc*.so' | head -1)
    has_vsock_resolver "$cygrpc" && vsock=with
    [[ $grpcio_mode == wheel || $vsock == with ]] ||
        die "$grpcio_spec has no vsock resolver: was it built against glibc >= 2.18?"
    # Byte-compile (timestamp pycs: mke2fs -d keeps the mtimes), so the read-only guest does
    # not compile every module at each start under TCG.
    "$python" -m compileall -q -j0 "$out/site" >/dev/null
    "$python" -m compileall -q -j0 "$std" >/dev/null || true

    # The loader and every library the interpreter and its extension modules link.
    local libs
    libs=$(find "$out/bin/python3" "$out/site" "$std/lib-dynload" -type f \
        \( -name python3 -o -name '*.so' -o -name '*.so.*' \) -print0 | xargs -0 ldd 2>/dev/null |
        awk '/^[^[:space:]]/ { next }  # "file:" headers
             /not found/ { print "MISSING " $1; next }
             $2 == "=>" && $3 ~ /^\// { print $3; next }
             $1 ~ /^\// { print $1 }' |
        sort -u)
    if grep -q '^MISSING' <<<"$libs"; then
        die "libraries not found for the bundle: $(grep '^MISSING' <<<"$libs" | tr '\n' ' ')"
    fi
    local lib
    while read -r lib; do
        [[ -n $lib ]] || continue
        cp -L "$lib" "$out/lib/$(basename "$lib")"
    done <<<"$libs"
    [[ -f $out/lib/ld-linux-x86-64.so.2 ]] || die "ldd named no ld-linux-x86-64.so.2"

    cat >"$out/bin/python" <<EOF
#!/bin/sh
# The bundled Python ($("$python" --version 2>&1), from $python), relocatable: its own loader
# and libraries, its own standard library, no site directories, no bytecode written.
root=\$(cd "\$(dirname "\$0")/.." && pwd)
export PYTHONHOME="\$root" PYTHONPATH="\$root/app:\$root/site" PYTHONDONTWRITEBYTECODE=1
exec "\$root/lib/ld-linux-x86-64.so.2" --library-path "\$root/lib" "\$root/bin/python3" -S "\$@"
EOF
    chmod 0755 "$out/bin/python"
    # Smoke test on the host, exactly as the guest runs it.
    "$out/bin/python" -c 'import grpc, google.protobuf, grpc_health.v1.health_pb2' ||
        die "the bundled Python cannot import grpc"
    log "runtime ${pins[*]} (grpc-core $vsock its vsock resolver) on Python $pyver built in" \
        "$((SECONDS - t0)) s ($(du -sh "$out" | cut -f1))"
}

if [[ ! -f $runtime/.ready ]]; then
    log "building the Python runtime ($runtime)"
    tmp=$(mktemp -d "$dir/tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    build_runtime "$tmp/runtime"
    touch "$tmp/runtime/.ready"
    rm -rf "$runtime"
    mv "$tmp/runtime" "$runtime"
    rm -rf "$tmp"
    trap - EXIT
    prune 'runtime-*' 2
fi

image_key=$({
    echo "$runtime_key" "$tools_version"
    sha256sum "$0" "$client" "$proto"
} | hash_of)
image="$dir/bundle-$image_key.img"
if [[ ! -f $image ]]; then
    t0=$SECONDS
    tmp=$(mktemp -d "$dir/tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    stage="$tmp/stage"
    # Hard links: the runtime is only read.
    cp -al "$runtime" "$stage"
    rm -f "$stage/.ready"
    mkdir -p "$stage/app"
    "$venv/bin/python" -m grpc_tools.protoc -I "$proto_root" \
        --python_out="$stage/app" --grpc_python_out="$stage/app" "$proto" >&2
    cp "$client" "$stage/app/vsock_client.py"
    "$python" -m compileall -q "$stage/app" >/dev/null
    "$stage/bin/python" -c 'import boxlite.v1.guest_pb2_grpc' || die "the generated stubs do not import"
    size_mib=$(($(du -sm "$stage" | cut -f1) * 5 / 4 + 16))
    mke2fs -q -F -t ext4 -O ^has_journal -m 0 -L gapy -d "$stage" "$tmp/image" "${size_mib}M" >/dev/null
    mv "$tmp/image" "$image"
    rm -rf "$tmp"
    trap - EXIT
    prune 'bundle-*.img' 3
    log "image $image (${size_mib} MiB) built in $((SECONDS - t0)) s"
fi
echo "$image"
