//! A shared counter in `.bss` updated with the BPF atomic add instruction.
//!
//! The BPF target has no compare-and-swap, so `core::sync::atomic` offers no `fetch_add` there;
//! `lock *(u64 *)(rX + 0) += rY` (BPF_ATOMIC | BPF_ADD, the old XADD) exists on every kernel.

use core::{arch::asm, cell::UnsafeCell};

/// A `u64` many CPUs add to; reads are plain (a momentarily stale value is fine for a gate).
#[repr(transparent)]
pub(crate) struct Counter(UnsafeCell<u64>);

// SAFETY: all writes are atomic adds; reads are single aligned loads.
unsafe impl Sync for Counter {}

impl Counter {
    /// A zero counter (lands in `.bss`).
    pub(crate) const fn new() -> Self {
        Self(UnsafeCell::new(0))
    }

    /// Current value.
    #[inline(always)]
    pub(crate) fn get(&self) -> u64 {
        // SAFETY: aligned pointer into a static.
        unsafe { core::ptr::read_volatile(self.0.get()) }
    }

    /// Atomically adds `n`.
    #[inline(always)]
    pub(crate) fn add(&self, n: u64) {
        // SAFETY: atomic add to an aligned u64 in a static; no other memory is touched.
        unsafe {
            asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) self.0.get(), in(reg) n, options(nostack));
        }
    }

    /// Atomically subtracts `n` (adds its two's complement).
    #[inline(always)]
    pub(crate) fn sub(&self, n: u64) {
        self.add(n.wrapping_neg());
    }
}
