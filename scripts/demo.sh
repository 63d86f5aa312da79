#!/usr/bin/env bash
# A guided tour (run as root on a development machine; `make demo`):
#   1. two scratch loop-mounted ext4 filesystems (the only ones the agent may freeze),
#   2. guest-agent with the eBPF observer, a /metrics port and JSON logs,
#   3. three writers that keep writing to them,
#   4. `guestctl snapshot` around a copy of one image (Quiesce, copy, Thaw),
#   5. what happened, in words: how long each filesystem was frozen, which writers stalled and
#      for how long, the matching /metrics lines, and the trace id with the per-phase times.
# Everything is cleaned up on exit and on Ctrl-C.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/debug"
d="${GUEST_AGENT_DEMO_DIR:-/var/tmp/guest-agent-demo}"
metrics_port="${GUEST_AGENT_DEMO_METRICS_PORT:-19100}"
sock="$d/agent.sock"
pids=()
agent_pid=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait "${pids[@]}" 2>/dev/null
    if [[ -n "$agent_pid" ]]; then kill -TERM "$agent_pid" 2>/dev/null; wait "$agent_pid" 2>/dev/null; fi
    for m in "$d"/mnt/*; do
        [[ -d "$m" ]] || continue
        if mountpoint -q "$m"; then
            fsfreeze -u "$m" 2>/dev/null
            dev="$(findmnt -n -o SOURCE "$m")"
            umount "$m"
            [[ "$dev" == /dev/loop* ]] && losetup -d "$dev" 2>/dev/null
        fi
    done
    rm -rf "$d"
}

[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (loop devices, FIFREEZE, eBPF)" >&2; exit 1; }
[[ -x "$bin/guest-agent" && -x "$bin/guestctl" ]] || { echo "demo: run 'make demo' (it builds first)" >&2; exit 1; }
cleanup
trap cleanup EXIT
trap 'echo; echo "demo: interrupted, cleaning up"; exit 130' INT TERM

say "1. Two scratch filesystems (ext4 on loop devices) under $d/mnt"
mkdir -p "$d/mnt"
for fs in app db; do
    truncate -s 256M "$d/$fs.img"
    mkfs.ext4 -q -F "$d/$fs.img"
    mkdir -p "$d/mnt/$fs"
    mount "$(losetup -f --show "$d/$fs.img")" "$d/mnt/$fs"
    echo "   $d/mnt/$fs"
done

say "2. guest-agent (may freeze only $d/mnt; eBPF on; /metrics on 127.0.0.1:$metrics_port)"
RUST_LOG="info,freeze_observer=debug" "$bin/guest-agent" \
    --listen "unix://$sock" --freeze-only "$d/mnt" --state-dir "/run/guest-agent-demo" \
    --metrics-listen "tcp://127.0.0.1:$metrics_port" --ebpf auto --log-format json \
    2>"$d/agent.log" &
agent_pid=$!
for _ in $(seq 100); do
    "$bin/guestctl" --connect "unix://$sock" --connect-timeout 0.2 ping >/dev/null 2>&1 && break
    sleep 0.1
done
"$bin/guestctl" --connect "unix://$sock" ping
ebpf="$(jq -r 'select(.message == "eBPF observer running") | .freeze_source' "$d/agent.log" | head -1)"
echo "   eBPF observer: ${ebpf:-not running (see $d/agent.log)}"

say "3. Three writers keep writing"
( bash -c 'while :; do echo "$(date +%s.%N) request served" >> "$0/app/app.log"; sleep 0.02; done' "$d/mnt" ) &
pids+=($!)
( while :; do dd if=/dev/urandom of="$d/mnt/db/table.dat" bs=64k count=4 conv=notrunc status=none; sleep 0.05; done ) &
pids+=($!)
( while :; do touch "$d/mnt/db/session.$RANDOM"; sleep 0.1; done ) &
pids+=($!)
sleep 1
echo "   writers: ${pids[*]} (a bash appender on app; dd and touch on db)"

say "4. guestctl snapshot: Quiesce, copy the db image while frozen, Thaw"
"$bin/guestctl" --connect "unix://$sock" snapshot -- \
    bash -c "sleep 0.3; cp --sparse=always '$d/db.img' '$d/db.copy.img'" | tee "$d/snapshot.txt"
sleep 0.5

say "5. What happened"
echo "Freezes (from the agent's eBPF observer):"
jq -r 'select(.message == "filesystem thawed") |
       "   \(.mountpoint // "?" | tostring | sub("^Some\\(\"";"") | sub("\"\\)$";"")) was frozen for \(.frozen_ms) ms (frozen by: \(.origin))"' "$d/agent.log"
echo "Writers that stalled on a frozen filesystem:"
stalls="$(jq -r 'select(.message == "writer resumed") |
       "   pid \(.pid) (\(.comm)) waited \(.stalled_ms) ms at \(.level)"' "$d/agent.log")"
echo "${stalls:-   none seen (is the eBPF observer running?)}"
echo "Matching /metrics lines (curl http://127.0.0.1:$metrics_port/metrics):"
curl -s "http://127.0.0.1:$metrics_port/metrics" \
    | grep -E '^(guest_fs_freeze_duration_seconds_(count|sum)|guest_fs_stalled_writers_total|guest_fs_writer_stall_seconds_count|guest_fs_freeze_operations_total|guest_ebpf_up|guest_ebpf_freeze_source_info)' \
    | sed 's/^/   /'
trace="$(grep -oE '[0-9a-f]{32}' "$d/snapshot.txt" | head -1 || true)"
echo "Trace ${trace:-?}: the phases above are its host-side spans; the agent's spans (Quiesce, phase.*,"
echo "fs.freeze/fs.thaw per filesystem) are its children. Agent log lines in that trace:"
if [[ -n "$trace" ]]; then
    grep -c "$trace" "$d/agent.log" | sed 's/^/   /;s/$/ lines/'
fi
echo
echo "Done; cleaning up."
