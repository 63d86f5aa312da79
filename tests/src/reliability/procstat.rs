//! Resource use of a running process from /proc: resident memory, open file descriptors and
//! threads. Sampled at the start, middle and end of a soak, a leak shows as growth.

use std::fmt;

use crate::error::{FixtureError, Result};

/// One sample of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Entries in /proc/PID/fd.
    pub fds: usize,
    /// Threads (`Threads`).
    pub threads: u64,
}

/// Reads `field:` (a number, optionally followed by a unit) from /proc/PID/status text.
fn status_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

impl ProcSample {
    /// Samples process `pid` now.
    pub fn of(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| FixtureError::io(format!("read {path}"), e))?;
        let parse = |field: &str| {
            status_field(&text, field).ok_or_else(|| FixtureError::Parse {
                what: path.clone(),
                reason: format!("no {field} line"),
            })
        };
        let fd_dir = format!("/proc/{pid}/fd");
        let fds = std::fs::read_dir(&fd_dir)
            .map_err(|e| FixtureError::io(format!("read {fd_dir}"), e))?
            .count();
        Ok(Self {
            rss_kib: parse("VmRSS")?,
            fds,
            threads: parse("Threads")?,
        })
    }
}

/// Thread ids of process `pid` whose scheduler state is `state` (`'D'`: blocked
/// uninterruptibly in the kernel, e.g. in an ioctl waiting for I/O).
pub fn threads_in_state(pid: u32, state: char) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&tid| crate::writer::proc_state(tid) == Some(state))
        .collect()
}

impl fmt::Display for ProcSample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rss={:.1}MiB fds={} threads={}",
            self.rss_kib as f64 / 1024.0,
            self.fds,
            self.threads
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t7\n";
        assert_eq!(status_field(text, "VmRSS"), Some(1234));
        assert_eq!(status_field(text, "Threads"), Some(7));
        assert_eq!(status_field(text, "VmSwap"), None);
    }

    #[test]
    fn samples_this_process_and_counts_open_files() {
        let me = std::process::id();
        let a = ProcSample::of(me).unwrap();
        assert!(a.rss_kib > 0 && a.threads >= 1 && a.fds >= 3, "{a}");
        let files: Vec<_> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let b = ProcSample::of(me).unwrap();
        // Other test threads may close a few files meanwhile; ours dominate.
        assert!(b.fds >= a.fds + 40, "before {a}, with 50 more files {b}");
        drop(files);
        assert!(ProcSample::of(u32::MAX).is_err());
    }

    #[test]
    fn finds_a_sleeping_thread_and_not_a_blocked_one() {
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // A child just exec'd may still be runnable for a while on a busy machine.
        let t = std::time::Instant::now();
        while threads_in_state(c.id(), 'S').is_empty()
            && t.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(threads_in_state(c.id(), 'S'), vec![c.id()]);
        assert!(threads_in_state(c.id(), 'D').is_empty());
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(threads_in_state(c.id(), 'S').is_empty());
    }
}
