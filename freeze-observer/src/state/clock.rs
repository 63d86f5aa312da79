//! Kernel timestamps (`bpf_ktime_get_ns`, `CLOCK_MONOTONIC`) to wall-clock time.

use std::time::{Duration, SystemTime};

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock;

impl Clock {
    /// `CLOCK_MONOTONIC` now, in ns (the clock `bpf_ktime_get_ns` reads).
    pub(crate) fn monotonic_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Wall-clock time of the monotonic instant `ts_ns`.
    pub(crate) fn wall(ts_ns: u64) -> SystemTime {
        let now_mono = Self::monotonic_ns();
        let now = SystemTime::now();
        if ts_ns <= now_mono {
            now - Duration::from_nanos(now_mono - ts_ns)
        } else {
            now + Duration::from_nanos(ts_ns - now_mono)
        }
    }
}
