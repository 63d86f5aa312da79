#!/bin/sh
# writer FILE [HEARTBEAT]: appends checksummed records to FILE without pause, one write(2) per
# record, and prints "writer: seq=N uptime=SECS" to the console every HEARTBEAT records
# (default 500), so the host sees it stall while the filesystem is frozen and resume after.
#
# A record is one line: "R <seq:10> <rnd:5> <sum:10> <pad>", where seq counts from 0 without
# gaps, rnd is random, sum = (seq * 2654435761 + rnd * 40503 + 12345) mod 4294967291 and pad is
# 64 'x'. The host (tests/vm/harness/records.rs) checks every line of a snapshot against this.
f=$1
every=${2:-500}
pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
seq=0
exec 3>>"$f" || exit 1
echo "writer: started on $f"
while :; do
    rnd=$RANDOM
    sum=$(((seq * 2654435761 + rnd * 40503 + 12345) % 4294967291))
    printf 'R %010d %05d %010d %s\n' "$seq" "$rnd" "$sum" "$pad" >&3
    seq=$((seq + 1))
    if [ $((seq % every)) -eq 0 ]; then
        read -r up _ </proc/uptime
        echo "writer: seq=$seq uptime=$up"
    fi
done
