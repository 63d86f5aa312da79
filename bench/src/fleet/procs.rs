//! Child processes of the benchmark (stopped by pid on drop) and what /proc tells about them.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A child process, stopped on drop: SIGCONT (in case it was stopped), SIGTERM, then SIGKILL
/// after 5 s.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    name: String,
}

impl Child {
    /// Spawns `cmd`.
    pub fn spawn(mut cmd: Command, name: &str) -> Result<Self, String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the first line of its (piped) stdout, within `limit`.
    pub fn first_line(&mut self, limit: Duration) -> Result<String, String> {
        let out = self
            .child
            .stdout
            .take()
            .ok_or_else(|| format!("{}: stdout is not piped", self.name))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = String::new();
            while matches!(r.read_line(&mut sink), Ok(n) if n > 0) {
                sink.clear();
            }
        });
        rx.recv_timeout(limit)
            .map_err(|_| format!("{} printed nothing within {limit:?}", self.name))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory (VmRSS) and its peak (VmHWM) of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User plus system CPU time of `pid` so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis((utime + stime) * 1000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        let (rss, hwm) = rss_kib(me).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(cpu_time(me).is_some());
    }
}
