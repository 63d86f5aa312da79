#!/usr/bin/env bash
# Installs what building the eBPF object (agent-ebpf, via freeze-observer/build.rs and
# aya-build) needs: a nightly toolchain with rust-src (for -Z build-std=core) and bpf-linker
# built against the SAME LLVM as that nightly's rustc. Idempotent; a no-op (~1 s) when all is in
# place. Run as the user whose ~/.cargo and ~/.rustup are used for the build.
#
# Route (verified on Debian bookworm, rustc nightly 1.97 / LLVM 22.1):
#   * REFERENCE.md suggests apt's llvm-22-dev, but bookworm only ships llvm-19-dev (also in
#     bookworm-backports) and apt.llvm.org is not reachable from these machines. bpf-linker must
#     use an LLVM at least as new as rustc's (it reads rustc's bitcode), so llvm-19 is no good.
#   * rustup's x86_64-unknown-linux-gnu toolchains ship the full shared libLLVM that rustc itself
#     uses (lib/libLLVM.so.<ver>-rust-<release>), C API included. bpf-linker 0.13 links LLVM
#     dynamically from $LLVM_PREFIX/lib and sets an rpath there, so we point LLVM_PREFIX at a
#     directory of symlinks to the nightly's libLLVM. No apt packages, ~1.5 min to build.
#   * When the nightly changes (new libLLVM soname), the check below fails and bpf-linker is
#     rebuilt against the new one.
set -euo pipefail

TOOLCHAIN="${EBPF_TOOLCHAIN:-nightly}"
BPF_LINKER_VERSION="0.13.0"
LLVM_PREFIX_DIR="${BPF_LLVM_PREFIX:-/opt/bpf-llvm-rust-${TOOLCHAIN}}"

log() { printf 'setup-ebpf: %s\n' "$*" >&2; }

command -v rustup >/dev/null || { log "rustup is required"; exit 1; }

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    log "installing toolchain $TOOLCHAIN"
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi

if ! rustup component list --toolchain "$TOOLCHAIN" --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding rust-src to $TOOLCHAIN"
    rustup component add rust-src --toolchain "$TOOLCHAIN"
fi

sysroot="$(rustup run "$TOOLCHAIN" rustc --print sysroot)"
llvm_major="$(rustup run "$TOOLCHAIN" rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
case "$llvm_major" in
    21|22|23) ;;
    *) log "rustc $TOOLCHAIN uses LLVM $llvm_major; bpf-linker $BPF_LINKER_VERSION supports 21-23"; exit 1 ;;
esac
libllvm="$(ls "$sysroot"/lib/libLLVM.so.* 2>/dev/null | head -n1 || true)"
if [ -z "$libllvm" ]; then
    log "no shared libLLVM in $sysroot/lib (only x86_64-unknown-linux-gnu toolchains ship one)"
    exit 1
fi
soname="$(basename "$libllvm")"

# bpf-linker is usable when it runs and its libLLVM is the current nightly's.
linker_ok() {
    command -v bpf-linker >/dev/null || return 1
    local bin; bin="$(command -v bpf-linker)"
    ldd "$bin" 2>/dev/null | grep -q "$soname => " || return 1
    ldd "$bin" 2>/dev/null | grep -q 'not found' && return 1
    bpf-linker --version >/dev/null 2>&1
}

mkdir -p "$LLVM_PREFIX_DIR/lib"
# Point the prefix at this nightly's libLLVM (under both names the linker and loader use).
find "$LLVM_PREFIX_DIR/lib" -maxdepth 1 -name 'libLLVM*' -type l ! -name "$soname" ! -name libLLVM.so -delete
ln -sfn "$libllvm" "$LLVM_PREFIX_DIR/lib/libLLVM.so"
ln -sfn "$libllvm" "$LLVM_PREFIX_DIR/lib/$soname"

if linker_ok; then
    log "ok: $(bpf-linker --version) on $soname, $(rustup run "$TOOLCHAIN" rustc --version)"
    exit 0
fi

log "building bpf-linker $BPF_LINKER_VERSION against $soname (LLVM $llvm_major)"
LLVM_PREFIX="$LLVM_PREFIX_DIR" cargo install bpf-linker \
    --version "$BPF_LINKER_VERSION" --locked --force \
    --no-default-features --features "llvm-$llvm_major"

linker_ok || { log "bpf-linker still not usable after install"; exit 1; }
log "ok: $(bpf-linker --version) on $soname"
