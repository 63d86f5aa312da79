//! Contender processes: started in their own process group (a Ctrl-C in the terminal reaches
//! only the benchmark, which then cleans up in order), stopped by PID with SIGTERM and, if
//! they linger, SIGKILL.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::child::{ChildSpec, SUBCOMMAND};
use crate::error::BenchError;

/// How long a contender gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Current resident set (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set (VmHWM), KiB.
    pub hwm_kib: u64,
}

/// A running contender process, stopped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Starts `argv` through the `__child` wrapper (parent-death signal, optional mount
    /// isolation), with stdout and stderr appended to `log`.
    pub fn spawn_wrapped(
        name: &str,
        spec: &ChildSpec,
        log: &Path,
        env: &[(&str, String)],
    ) -> Result<Self, BenchError> {
        let me = std::env::current_exe().map_err(BenchError::io("locating freeze-bench"))?;
        let mut cmd = Command::new(me);
        cmd.arg(SUBCOMMAND).args(spec.to_args());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn(name, cmd, log)
    }

    /// Starts `cmd` directly (its own process group, output to `log`). The benchmark's own
    /// `RUST_LOG` is not passed on; set it in `cmd` to give the contender one.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, BenchError> {
        use std::os::unix::process::CommandExt as _;
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env_remove("RUST_LOG");
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(BenchError::io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(BenchError::io("duplicating the log fd"))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(BenchError::io(format!("starting {name}")))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Resident memory now and at its peak.
    pub fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        parse_memory(&status)
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        cpu_ticks(&stat).map(|t| Duration::from_secs_f64(t as f64 / ticks as f64))
    }

    /// SIGTERM by PID, wait up to [`TERM_GRACE`], then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{} (pid {pid}) ignored SIGTERM; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` lines of a log file, indented, for error messages (the scratch directory
/// and its logs are removed when the run ends).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        return format!("{} is empty", path.display());
    }
    format!(
        "last lines of {}:\n    {}",
        path.display(),
        tail.join("\n    ")
    )
}

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`; the command name may
/// contain spaces and parentheses, so fields are counted from its last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS and VmHWM from the text of `/proc/PID/status`.
pub fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fields_are_read_in_kib() {
        let status =
            "Name:\tguest-agent\nVmPeak:\t  100 kB\nVmHWM:\t    9216 kB\nVmRSS:\t    8704 kB\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                rss_kib: 8704,
                hwm_kib: 9216
            })
        );
        assert_eq!(parse_memory("Name: x\n"), None);
    }

    #[test]
    fn cpu_ticks_skip_odd_command_names() {
        let stat =
            "4242 (guest agent) (x)) S 1 4242 4242 0 -1 4194560 1043 0 0 0 37 12 0 0 20 0 4 0";
        assert_eq!(cpu_ticks(stat), Some(49));
        assert_eq!(cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let path = std::env::temp_dir().join(format!("freeze-bench-log-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert!(
            log_tail(&path, 2).ends_with("b\n    c"),
            "{}",
            log_tail(&path, 2)
        );
        std::fs::remove_file(&path).unwrap();
        assert!(log_tail(&path, 2).ends_with("is empty"));
    }

    #[test]
    fn stop_terminates_a_real_process_and_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("freeze-bench-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut g = ChildGuard::spawn("sleep", cmd, &dir.join("log")).unwrap();
        let pid = g.pid().unwrap();
        assert!(g.exited().is_none());
        assert!(g.memory().is_some());
        let t = Instant::now();
        g.stop();
        assert!(t.elapsed() < TERM_GRACE, "SIGTERM should end sleep at once");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        g.stop();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
