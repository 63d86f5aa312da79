#!/usr/bin/env bash
# One-time (and idempotent) set-up for the VM end-to-end tests (tests/vm, `make vm-test`).
#
# Fetches and caches, outside the git tree, everything a VM test boots with, so that nothing is
# downloaded at test time:
#   - Debian packages on the host: qemu-system-x86 (7.2), busybox-static, e2fsprogs (e2fsck,
#     debugfs, and mke2fs copied into the guest), cpio, xz-utils, zstd, musl-tools, binutils;
#   - the Rust musl target, for a static guest-agent / guestctl;
#   - two Debian guest kernels, 6.1 (bookworm) and 6.12 (bookworm-backports): the .deb is
#     fetched with apt through a private source list (the host's apt configuration is left
#     alone), the bzImage payload is decompressed to a plain ELF vmlinux (qemu boots it through
#     PVH, several seconds faster than the bzImage under TCG), and the modules the guest needs
#     (virtio-pci, virtio-blk, vsock, ext4 and their dependencies) are decompressed and listed
#     in load order;
#   - vhost-device-vsock 0.3 (rust-vmm, crates.io), the vhost-user backend that gives the host
#     a Firecracker-style hybrid vsock unix socket;
#   - the read-only Python disk of the grpcio vsock client (tests/vm/mkpybundle.sh: Debian's
#     python3 with its libraries, grpcio and protobuf from PyPI at the versions
#     scripts/setup-clients-python.sh pins, the stubs generated from guest.proto). grpcio is
#     built from its source distribution, because PyPI's binary wheel has no vsock resolver:
#     about 25 minutes on 2 cores the first time, cached after.
#
# Everything already present is only checked, so a second run takes about a second.
# Environment:
#   GUEST_AGENT_VM_CACHE    cache directory (default /var/cache/guest-agent-vm)
#   GUEST_AGENT_VM_REFRESH  set to 1 to re-resolve the newest kernels of each series
set -euo pipefail

cache="${GUEST_AGENT_VM_CACHE:-/var/cache/guest-agent-vm}"
vhost_version="0.3.0"
# Modules the guest loads (with their dependencies from modules.dep, in dependency order).
# crc32c_generic first: ext4 and jbd2 ask for it as a soft dependency (crypto-crc32c).
wanted_modules=(crc32c_generic virtio_pci virtio_blk vmw_vsock_virtio_transport vsock_loopback ext4)

log() { echo "setup-vm: $*"; }
die() { echo "setup-vm: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get, /var/cache)"

# --- host packages -------------------------------------------------------------------------
apt_pkgs=(qemu-system-x86 busybox-static e2fsprogs cpio xz-utils zstd musl-tools kmod file binutils)
"$(dirname "$0")/apt-ensure.sh" setup-vm "${apt_pkgs[@]}"

# --- Rust musl target (static guest binaries) ------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    log "adding the x86_64-unknown-linux-musl target"
    rustup target add x86_64-unknown-linux-musl
fi

# --- vhost-device-vsock --------------------------------------------------------------------
vhost_bin="$cache/cargo/bin/vhost-device-vsock"
if [[ ! -x $vhost_bin || "$(cat "$cache/cargo/.version" 2>/dev/null)" != "$vhost_version" ]]; then
    log "building vhost-device-vsock $vhost_version (a few minutes, once)"
    mkdir -p "$cache/cargo"
    cargo install --quiet --locked --force --root "$cache/cargo" vhost-device-vsock --version "=$vhost_version"
    echo "$vhost_version" >"$cache/cargo/.version"
fi

# --- guest kernels ---------------------------------------------------------------------------
aptdir="$cache/apt"
apt_opts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache" -o "Debug::NoLocking=1"
          -o "APT::Sandbox::User=root")
apt_ready=0
private_apt() {
    if ((apt_ready == 0)); then
        mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
        local key=/usr/share/keyrings/debian-archive-keyring.gpg
        cat >"$aptdir/sources.list" <<EOF
deb [signed-by=$key] http://deb.debian.org/debian bookworm main
deb [signed-by=$key] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=$key] http://deb.debian.org/debian bookworm-backports main
EOF
        log "updating the private package lists (bookworm, bookworm-backports)"
        apt-get "${apt_opts[@]}" update -qq
        apt_ready=1
    fi
}

# newest_package REGEX: the highest-versioned package name matching REGEX.
newest_package() {
    apt-cache "${apt_opts[@]}" search --names-only "$1" | awk '{print $1}' | sort -V | tail -1
}

# extract_vmlinux VMLINUZ OUT: decompress the bzImage payload (xz, zstd or gzip) into an ELF.
extract_vmlinux() {
    local src=$1 out=$2 magic tool off i
    # (bash strings cannot hold NUL: the xz magic is matched without its final zero byte)
    local magics=($'\xfd7zXZ' $'\x28\xb5\x2f\xfd' $'\x1f\x8b\x08') tools=(xz zstd gzip)
    for i in 0 1 2; do
        magic=${magics[i]}; tool=${tools[i]}
        while read -r off; do
            [[ -n $off ]] || continue
            tail -c +"$((off + 1))" "$src" | "$tool" -dc >"$out.tmp" 2>/dev/null || true
            if file -b "$out.tmp" | grep -q '^ELF 64-bit'; then
                mv "$out.tmp" "$out"
                return 0
            fi
        done < <(LC_ALL=C grep -obUaF -- "$magic" "$src" | cut -d: -f1)
    done
    rm -f "$out.tmp"
    return 1
}

# module_order MODDIR NAME...: module paths (relative to MODDIR) in load order, dependencies
# first, each once; built-in modules are left out.
module_order() {
    local moddir=$1; shift
    declare -A seen=()
    local order=()
    visit() {
        local rel=$1 line i
        [[ -n ${seen[$rel]:-} ]] && return 0
        seen[$rel]=1
        line=$(grep -m1 -- "^$rel:" "$moddir/modules.dep" || true)
        [[ -n $line ]] || die "$rel is not in $moddir/modules.dep"
        # modules.dep lists the full closure, nearest dependency first: load from the end.
        local deps=(${line#*:})
        for ((i = ${#deps[@]} - 1; i >= 0; i--)); do visit "${deps[i]}"; done
        order+=("$rel")
    }
    local name rel
    for name in "$@"; do
        rel=$(grep -m1 -E "(^|/)$name\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | cut -d: -f1 || true)
        if [[ -z $rel ]]; then
            grep -qE "(^|/)$name\.ko$" "$moddir/modules.builtin" || die "module $name not found in $moddir"
            continue
        fi
        visit "$rel"
    done
    printf '%s\n' "${order[@]}"
}

# prepare_kernel SERIES PACKAGE_REGEX
prepare_kernel() {
    local series=$1 regex=$2 dir="$cache/kernels/$1"
    if [[ -f $dir/ready && ${GUEST_AGENT_VM_REFRESH:-0} != 1 ]]; then
        log "kernel $series: $(cat "$dir/release") (cached)"
        return 0
    fi
    private_apt
    local pkg
    pkg=$(newest_package "$regex")
    [[ -n $pkg ]] || die "no package matches $regex"
    log "kernel $series: fetching $pkg"
    local work="$cache/work-$series"
    rm -rf "$work" && mkdir -p "$work/root"
    (cd "$work" && apt-get "${apt_opts[@]}" download -qq "$pkg")
    dpkg-deb -x "$work"/*.deb "$work/root"
    local release
    release=$(ls "$work/root/lib/modules")
    [[ $(wc -w <<<"$release") -eq 1 ]] || die "unexpected module trees in $pkg: $release"
    local moddir="$work/root/lib/modules/$release"
    depmod -b "$work/root" "$release"

    rm -rf "$dir" && mkdir -p "$dir/modules"
    extract_vmlinux "$work/root/boot/vmlinuz-$release" "$dir/vmlinux" ||
        die "cannot decompress $work/root/boot/vmlinuz-$release"
    local rel base
    : >"$dir/modules.load"
    while read -r rel; do
        base=$(basename "$rel")
        case $base in
            *.ko.xz) xz -dc "$moddir/$rel" >"$dir/modules/${base%.xz}" ;;
            *.ko.zst) zstd -qdc "$moddir/$rel" >"$dir/modules/${base%.zst}" ;;
            *.ko.gz) gzip -dc "$moddir/$rel" >"$dir/modules/${base%.gz}" ;;
            *.ko) cp "$moddir/$rel" "$dir/modules/$base" ;;
            *) die "unexpected module file $rel" ;;
        esac
        base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
        echo "$base" >>"$dir/modules.load"
    done < <(module_order "$moddir" "${wanted_modules[@]}")
    echo "$release" >"$dir/release"
    echo "$pkg" >"$dir/package"
    touch "$dir/ready"
    rm -rf "$work"
    log "kernel $series: $release ready ($(wc -l <"$dir/modules.load") modules)"
}

prepare_kernel 6.1 '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$'
prepare_kernel 6.12 '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$'

# --- the Python disk (a hash check when present; the tests rebuild its image when the client
# or the .proto change, without network) -------------------------------------------------------
GUEST_AGENT_VM_CACHE="$cache" "$(dirname "$0")/../tests/vm/mkpybundle.sh" >/dev/null

log "ok (cache: $cache)"
