#!/usr/bin/env bash
# Starts guest-agent with development defaults: a unix socket and loopback TCP, no vsock, and
# freezing nothing but a scratch loop-mounted ext4 filesystem this script creates.
# Ctrl-C stops the agent (it thaws on exit) and removes the scratch filesystem.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${GUEST_AGENT_SCRATCH:-/var/tmp/guest-agent-dev}"
sock="$scratch/agent.sock"
tcp="${GUEST_AGENT_TCP:-127.0.0.1:2695}"
bin="$root/target/debug/guest-agent"
ctl="$root/target/debug/guestctl"
img="$scratch/scratch.img"
mnt="$scratch/mnt"

cleanup() {
    set +e
    if mountpoint -q "$mnt"; then
        fsfreeze -u "$mnt" 2>/dev/null
        dev="$(findmnt -n -o SOURCE "$mnt")"
        umount "$mnt"
        [[ "$dev" == /dev/loop* ]] && losetup -d "$dev" 2>/dev/null
    fi
    rm -f "$img" "$sock"
}

if [[ "${1:-}" == "--clean-only" ]]; then cleanup; exit 0; fi
[[ $(id -u) -eq 0 ]] || { echo "run-dev: must run as root (loop devices, FIFREEZE)" >&2; exit 1; }

cleanup
mkdir -p "$mnt"
truncate -s 256M "$img"
mkfs.ext4 -q -F "$img"
dev="$(losetup -f --show "$img")"
mount "$dev" "$mnt"
trap cleanup EXIT
trap 'exit 130' INT TERM

cat <<MSG

guest-agent (development mode)
  unix socket : unix://$sock
  tcp         : tcp://$tcp
  may freeze  : $mnt only (ext4 on $dev)

Talk to it from another terminal:
  $ctl --connect unix://$sock ping
  $ctl --connect tcp://$tcp quiesce
  $ctl --connect tcp://$tcp status
  $ctl --connect tcp://$tcp thaw
  /opt/guest-agent-test/bin/grpcurl -plaintext $tcp list    # reflection is on
  /opt/guest-agent-test/bin/grpcurl -plaintext $tcp boxlite.v1.Guest/Ping
  (Python, Go, grpcurl: README.md, "Calling it from Python, Go or grpcurl")

Ctrl-C stops the agent (it thaws anything it froze) and removes the scratch filesystem.

MSG
"$bin" --listen "unix://$sock" --listen "tcp://$tcp" --freeze-only "$mnt" --freeze-timeout 60 "$@" &
agent=$!
wait "$agent"
