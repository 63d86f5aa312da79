//! The agent's own CPU, memory, threads and file descriptors, read from `/proc/self` when
//! metrics are collected. `/proc` is never frozen, so reading it cannot block on a freeze.
//!
//! These feed OpenTelemetry instruments (in [`super::metrics`]) named so that their Prometheus
//! form is the usual `process_*` family, which the OTLP export then carries as well.

/// One reading of `/proc/self`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: f64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: f64,
    /// Number of threads.
    pub threads: f64,
    /// Open file descriptors (None if `/proc/self/fd` cannot be read).
    pub open_fds: Option<f64>,
    /// Soft limit on file descriptors (None if unlimited or unreadable).
    pub max_fds: Option<f64>,
    /// Process start, seconds since the Unix epoch (None if the boot time is unknown).
    pub start_time_unix: Option<f64>,
}

impl Sample {
    /// Reads `/proc/self`; None if `/proc` is not mounted.
    pub fn read() -> Option<Sample> {
        let me = procfs::process::Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let ticks = procfs::ticks_per_second() as f64;
        let max_fds = me
            .limits()
            .ok()
            .and_then(|l| match l.max_open_files.soft_limit {
                procfs::process::LimitValue::Value(v) => Some(v as f64),
                procfs::process::LimitValue::Unlimited => None,
            });
        let start_time_unix = procfs::boot_time_secs()
            .ok()
            .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
        Some(Sample {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss as f64 * procfs::page_size() as f64,
            virtual_bytes: stat.vsize as f64,
            threads: stat.num_threads as f64,
            open_fds: me.fd_count().ok().map(|n| n as f64),
            max_fds,
            start_time_unix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_values_for_this_process() {
        let s = Sample::read().expect("/proc is mounted");
        assert!(s.resident_bytes > 1e5, "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.threads >= 1.0);
        assert!(s.open_fds.unwrap() >= 1.0, "{s:?}");
        assert!(s.max_fds.is_none_or(|m| m >= s.open_fds.unwrap()), "{s:?}");
        assert!(s.cpu_seconds >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_unix.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
