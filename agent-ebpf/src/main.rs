//! Kernel side of the freeze observer.
//!
//! Small programs that filter, stamp and emit; every decision that can be made in userspace is
//! made there. See `programs.rs` for the hooks and `kernel.rs` for reading kernel structs through
//! the BTF offsets userspace writes into the `OFFSETS` global at load time.
//!
//! This crate is built only for `bpfel-unknown-none` (by `freeze-observer`'s build.rs through
//! aya-build); a host build, e.g. `cargo clippy --workspace`, produces an empty binary.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// BPF has no compare-and-swap, so core's atomics lack fetch_add there; counter.rs uses the
// BPF atomic add instruction directly.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod counter;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable panic path, so this is never called in a loaded object.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("agent-ebpf is an eBPF object; it is built and embedded by freeze-observer");
}
