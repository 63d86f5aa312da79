# Two commands do everything on a fresh Debian 12 machine (as root):
#   make run    build and start guest-agent with development defaults
#   make test   set up, lint, build, and run every test (CI runs exactly this via .ci/run)
# More: make demo | soak | bench | bench-footprint | bench-ebpf | bench-ebpf-vm | bench-fleet | fuzz | vm-test
SHELL := /bin/bash
CARGO ?= cargo
FUZZ_SECONDS ?= 60

.PHONY: setup build lint test fuzz soak bench bench-footprint bench-ebpf bench-ebpf-vm bench-fleet vm-test run demo clean-scratch

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit tests, system tests against the real binaries (loop mounts, netns, real Prometheus,
# OTLP receiver), the short soak/stress runs, the nested-VM end-to-end suite, then a bounded
# fuzz run of every target. GUEST_AGENT_REQUIRE_ROOT=1 turns a root-only test's skip into a failure.
test: setup lint build
	GUEST_AGENT_REQUIRE_ROOT=1 $(CARGO) test --workspace --no-fail-fast
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# 1,000 Quiesce/Thaw cycles with verified writers, plus a 60 s random 16-client stress run.
soak: setup
	scripts/soak.sh

# Freeze cost, agent vs qemu-guest-agent vs raw fsfreeze, then the footprint (memory, Ping
# latency, instructions per Ping under valgrind's callgrind, start-up, binary size) against
# qemu-guest-agent; writes both sections of BENCHMARKS.md.
bench: setup
	scripts/apt-ensure.sh bench valgrind
	$(CARGO) build --release -p guest-agent -p guestctl -p freeze-bench
	$(CARGO) build --release --target x86_64-unknown-linux-musl -p guest-agent
	target/release/freeze-bench
	target/release/freeze-bench --footprint

# Only the footprint section.
bench-footprint: setup
	scripts/apt-ensure.sh bench valgrind
	$(CARGO) build --release -p guest-agent -p guestctl -p freeze-bench
	$(CARGO) build --release --target x86_64-unknown-linux-musl -p guest-agent
	target/release/freeze-bench --footprint

# eBPF observer on this kernel: overhead and freeze coverage (loop filesystems it makes) of
# the default freeze hook, of the ioctl opt-in and of none.
bench-ebpf: setup
	$(CARGO) build --release -p freeze-observer --example overhead --example coverage
	for hook in auto ioctl none; do \
	    FREEZE_HOOK=$$hook ROUNDS=10 target/release/examples/overhead 1 || exit 1; \
	    FREEZE_HOOK=$$hook target/release/examples/coverage 10 || exit 1; \
	done

# The same inside nested Debian 6.1 and 6.12 guests, whose kernels allow fexit (auto = fexit
# there), with the default hook and with the ioctl opt-in as the control; qemu -icount, so the
# guest's CPU time counts instructions and the host's load does not move the ratios.
bench-ebpf-vm: setup
	for series in 6.12 6.1; do for hook in auto ioctl; do \
	    GUEST_AGENT_VM_ICOUNT=3 GUEST_AGENT_VM_SERIES=$$series FREEZE_HOOK=$$hook scripts/vm-overhead.sh || exit 1; \
	done; done

# guestctl proxy at fleet scale: 50, 200 and 500 VMs (real agents and stand-ins serving a real
# agent's exposition), healthy and with 5 % dead / 5 % frozen / 1 % slow, merged and one target
# per VM, scraped by a real Prometheus; writes the "Fleet scale" section of BENCHMARKS.md
# (about 20 minutes; SECONDS_PER_RUN=120 seconds per run).
bench-fleet: setup
	$(CARGO) build --release -p guest-agent -p guestctl -p freeze-bench
	target/release/fleet-bench --seconds $${SECONDS_PER_RUN:-120} --write

vm-test: setup
	$(CARGO) build -p guestctl
	$(CARGO) test -p system-tests --test vm_e2e -- --nocapture

run: setup
	$(CARGO) build --workspace
	@scripts/run-dev.sh

demo: setup
	$(CARGO) build --workspace
	@scripts/demo.sh

clean-scratch:
	@scripts/run-dev.sh --clean-only
