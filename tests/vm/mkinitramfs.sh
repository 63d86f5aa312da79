#!/usr/bin/env bash
# mkinitramfs.sh KERNEL_DIR AGENT GUESTCTL OUT
#
# Assembles the test VM's initramfs (an uncompressed newc cpio: the kernel unpacks it faster
# under TCG than a compressed one) from
#   KERNEL_DIR  a kernel prepared by scripts/setup-vm.sh (modules/*.ko, modules.load)
#   AGENT       a static guest-agent binary (stripped here)
#   GUESTCTL    a static guestctl binary (stripped here), used inside the guest to connect
#               from a CID that is not the host's
# plus busybox-static, e2fsprogs' mke2fs with its shared libraries (the agent formats volumes
# with mkfs.ext4), tests/vm/init.sh and tests/vm/writer.sh from beside this script, and the
# binaries named in GUEST_AGENT_VM_EXTRA_BINS, if any.
set -euo pipefail

[[ $# -eq 4 ]] || { echo "usage: $0 KERNEL_DIR AGENT GUESTCTL OUT" >&2; exit 2; }
kdir=$1 agent=$2 ctl=$3 out=$4
here="$(cd "$(dirname "$0")" && pwd)"

for f in "$kdir/modules.load" "$agent" "$ctl" /bin/busybox /sbin/mke2fs; do
    [[ -e $f ]] || { echo "mkinitramfs: $f is missing (run scripts/setup-vm.sh)" >&2; exit 1; }
done
file -b /bin/busybox | grep -q 'statically linked' ||
    { echo "mkinitramfs: /bin/busybox is not static (install busybox-static)" >&2; exit 1; }

root=$(mktemp -d "${out}.root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,lib/modules,proc,sys,dev,run,tmp,data}

cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$here/init.sh" "$root/init"
install -m 0755 "$here/writer.sh" "$root/bin/writer"
strip -o "$root/bin/guest-agent" "$agent"
strip -o "$root/bin/guestctl" "$ctl"
# Optional extra static binaries for /bin (GUEST_AGENT_VM_EXTRA_BINS, space-separated paths),
# e.g. the eBPF overhead benchmark (scripts/vm-overhead.sh).
for extra in ${GUEST_AGENT_VM_EXTRA_BINS:-}; do
    [[ -f $extra ]] || { echo "mkinitramfs: extra binary $extra is missing" >&2; exit 1; }
    strip -o "$root/bin/$(basename "$extra")" "$extra"
done

cp "$kdir"/modules/*.ko "$root/lib/modules/"
cp "$kdir/modules.load" "$root/lib/modules/modules.load"

# mke2fs (as mkfs.ext4) with the shared libraries and loader it needs.
cp /sbin/mke2fs "$root/sbin/mke2fs"
ln -s mke2fs "$root/sbin/mkfs.ext4"
[[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
ldd /sbin/mke2fs | grep -oE '/[^ ]+' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
