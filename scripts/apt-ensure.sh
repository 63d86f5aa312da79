#!/usr/bin/env bash
# Installs the Debian packages named as arguments that are not installed yet; with all of them
# present it only checks (one dpkg-query each). The first argument is a label for the log line.
#   scripts/apt-ensure.sh setup-vm qemu-system-x86 busybox-static ...
set -euo pipefail
exec 1>&2  # callers may capture stdout (mkpybundle.sh returns a path on it)
label="$1"; shift
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "$label: installing ${missing[*]}" >&2
sudo_cmd=""; [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
