//! Pausing the VMM process with SIGSTOP around the disk copy, so no guest vCPU runs (and no
//! device model writes) while the copy is taken. Once SIGSTOP was sent, SIGCONT is
//! guaranteed: [`Paused::resume`] on the normal path, `Drop` on every other one (an early
//! return, a panic unwinding).

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long to wait for the kernel to report the process stopped.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// Why pausing or resuming failed.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// The pid is not a valid process id.
    #[error("--pause-pid {0} is not a valid process id")]
    BadPid(u32),
    /// kill(2) failed.
    #[error("{sig} to pid {pid} failed: {errno}")]
    Kill {
        /// Which signal.
        sig: Signal,
        /// To whom.
        pid: u32,
        /// Why.
        errno: Errno,
    },
    /// The process did not reach the stopped state in time.
    #[error("pid {pid} did not stop within {after:?} after SIGSTOP (state {state:?})")]
    NotStopped {
        /// The process.
        pid: u32,
        /// How long we waited.
        after: Duration,
        /// Its last state letter from /proc, if readable.
        state: Option<char>,
    },
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T` stopped, `t` traced, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    parse_state(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The state field of a `/proc/PID/stat` line. The command name before it is in
/// parentheses and may itself contain spaces and ')', so the last ')' ends it.
fn parse_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

fn signal(pid: u32, sig: Signal) -> Result<(), PauseError> {
    let raw = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(PauseError::BadPid(pid))?;
    kill(Pid::from_raw(raw), sig).map_err(|errno| PauseError::Kill { sig, pid, errno })
}

/// A VMM process we sent SIGSTOP to. Resumes it exactly once.
#[derive(Debug)]
pub struct Paused {
    pid: u32,
    resumed: bool,
}

impl Paused {
    /// Sends SIGSTOP to `pid` and waits (up to [`STOP_WAIT`]) until it is stopped.
    ///
    /// If the process does not stop in time it is resumed again before the error returns.
    pub async fn stop(pid: u32) -> Result<Self, PauseError> {
        signal(pid, Signal::SIGSTOP)?;
        // From here on SIGCONT is owed, whatever happens.
        let mut paused = Paused {
            pid,
            resumed: false,
        };
        let started = Instant::now();
        loop {
            let state = tokio::task::spawn_blocking(move || proc_state(pid))
                .await
                .unwrap_or(None);
            if matches!(state, Some('T' | 't')) {
                return Ok(paused);
            }
            if started.elapsed() >= STOP_WAIT {
                let _ = paused.resume();
                return Err(PauseError::NotStopped {
                    pid,
                    after: STOP_WAIT,
                    state,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The paused process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGCONT. Called at most once with effect; later calls are no-ops.
    pub fn resume(&mut self) -> Result<(), PauseError> {
        if self.resumed {
            return Ok(());
        }
        self.resumed = true;
        signal(self.pid, Signal::SIGCONT)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.resumed {
            if let Err(e) = self.resume() {
                eprintln!("guestctl: resuming the VMM on the way out failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    struct Sleeper(Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper() -> Sleeper {
        Sleeper(Command::new("sleep").arg("30").spawn().unwrap())
    }

    async fn wait_state(pid: u32, want: impl Fn(char) -> bool) -> char {
        for _ in 0..200 {
            if let Some(s) = proc_state(pid) {
                if want(s) {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "pid {pid} never reached the wanted state: {:?}",
            proc_state(pid)
        );
    }

    #[tokio::test]
    async fn stop_then_resume() {
        let s = sleeper();
        let pid = s.0.id();
        let mut p = Paused::stop(pid).await.unwrap();
        assert_eq!(proc_state(pid), Some('T'));
        p.resume().unwrap();
        wait_state(pid, |c| c != 'T').await;
        p.resume().unwrap();
    }

    #[tokio::test]
    async fn drop_resumes() {
        let s = sleeper();
        let pid = s.0.id();
        {
            let _p = Paused::stop(pid).await.unwrap();
            assert_eq!(proc_state(pid), Some('T'));
        }
        wait_state(pid, |c| c != 'T').await;
    }

    #[tokio::test]
    async fn missing_or_bad_pid_is_an_error() {
        assert!(matches!(Paused::stop(0).await, Err(PauseError::BadPid(0))));
        // Reap a child to get a pid that no longer exists.
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        let err = Paused::stop(pid).await.unwrap_err();
        assert!(
            matches!(
                err,
                PauseError::Kill {
                    errno: Errno::ESRCH,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn state_parses_names_with_parentheses() {
        assert_eq!(parse_state("42 (qemu) x) (y) T 1 42 42 0"), Some('T'));
        assert_eq!(parse_state("42 (firecracker) S 1"), Some('S'));
        assert_eq!(parse_state("garbage"), None);
        assert_eq!(parse_state("42 (x)"), None);
        // This process is alive and not stopped.
        assert!(matches!(proc_state(std::process::id()), Some('R' | 'S')));
    }
}
