#!/usr/bin/env bash
# Builds the static (musl) guest-agent and guestctl that the VM tests put in the initramfs:
# target/x86_64-unknown-linux-musl/debug/{guest-agent,guestctl}.
#
# A debug build, except that the crates parsing the kernel's BTF when the eBPF observer loads
# (aya, aya-obj, object) are optimised: unoptimised, that parse alone takes ~9 s under TCG and
# doubles the boot; optimising every dependency instead costs a ~20 minute cold build for one
# or two seconds more.
set -euo pipefail
cd "$(dirname "$0")/../.."

opt=()
for crate in aya aya-obj object; do
    opt+=(--config "profile.dev.package.$crate.opt-level=2")
done
exec cargo build --target x86_64-unknown-linux-musl "${opt[@]}" -p guest-agent -p guestctl "$@"
