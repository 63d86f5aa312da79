#!/bin/busybox sh
# /init of the end-to-end test VM (assembled by tests/vm/mkinitramfs.sh).
#
# Mounts the pseudo filesystems, loads the modules listed in /lib/modules/modules.load (in that
# order), starts guest-agent on vsock port 2695 (/metrics on 2696) and a command loop on the
# second serial port (ttyS1) through which the host harness runs shell commands. Everything it and the agent print
# goes to the console (ttyS0), which the harness keeps and prints when a test fails.
#
# Settings come from the kernel command line (unknown key=value words become environment
# variables of init):
#   ga_freeze_timeout=SECS   the agent's --freeze-timeout (default 60)
#   ga_args=A,B,...          extra agent arguments, comma-separated

/bin/busybox mkdir -p /proc /sys /dev /run /tmp /data /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
exec </dev/console >/dev/console 2>&1

echo "init: kernel $(uname -r)"
while read -r m; do
    insmod "/lib/modules/$m" || echo "init: insmod $m failed"
done </lib/modules/modules.load
echo "init: modules loaded"

agent_args="--listen vsock://-1:2695 --metrics-listen vsock://-1:2696 --freeze-only /data --freeze-timeout ${ga_freeze_timeout:-60}"
extra=$(echo "${ga_args:-}" | tr ',' ' ')
(
    # shellcheck disable=SC2086 # word splitting of the argument lists is intended
    /bin/guest-agent $agent_args $extra
    echo "init: guest-agent exited with status $?"
) &
echo "init: guest-agent started: $agent_args $extra"

# The command loop: each line from the host is "<id> <shell command>"; the command runs in a
# subshell with its output on ttyS1, followed by a line "@@done <id> <exit status>".
stty -F /dev/ttyS1 raw -echo
(
    while IFS= read -r line; do
        id=${line%% *}
        cmd=${line#* }
        (eval "$cmd")
        echo "@@done $id $?"
    done </dev/ttyS1 >/dev/ttyS1 2>&1
    echo "init: command loop ended"
) &
echo "init: ready"

while :; do sleep 3600; done
