//! Running external tools (mkfs, losetup, mount, ip, fsfreeze) with a bounded wait, so a
//! tool stuck on a frozen filesystem fails the test instead of hanging it.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{FixtureError, Result};

/// How long a set-up or clean-up tool may take before it is killed.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Process id it ran as (e.g. to match what the eBPF observer reports about it).
    pub pid: u32,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output as text.
    pub stdout: String,
    /// Standard error as text.
    pub stderr: String,
}

impl Output {
    /// True if it exited with status 0.
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// The command line as a person would type it, for error messages.
pub fn describe<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Runs `program args` and returns its output whatever the exit status; kills it after
/// `timeout`.
pub fn run_with_timeout<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
) -> Result<Output> {
    let line = describe(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FixtureError::io(format!("spawn `{line}`"), e))?;
    let pid = child.id();
    // Read both pipes on threads so a chatty tool never blocks on a full pipe.
    let mut out = child.stdout.take().expect("stdout was piped");
    let mut err = child.stderr.take().expect("stderr was piped");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(FixtureError::Timeout {
                    what: format!("`{line}`"),
                    after: timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(FixtureError::io(format!("wait for `{line}`"), e)),
        }
    };
    Ok(Output {
        pid,
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Runs a tool with the default timeout, whatever its exit status.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    run_with_timeout(program, args, TOOL_TIMEOUT)
}

/// Runs a tool and fails unless it exits 0; returns all it produced.
pub fn run_checked<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    let out = run(program, args)?;
    if !out.ok() {
        return Err(FixtureError::Command {
            cmd: describe(program, args),
            status: out.status.to_string(),
            stderr: out.stderr.trim().to_string(),
        });
    }
    Ok(out)
}

/// Runs a tool and fails unless it exits 0; returns its stdout.
pub fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    run_checked(program, args).map(|out| out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = run("sh", &["-c", "echo out; echo err >&2; exit 3"]).unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(!out.ok());
        assert_ne!(out.pid, std::process::id());
        let pid = run_checked("sh", &["-c", "echo $$"]).unwrap();
        assert_eq!(pid.stdout.trim(), pid.pid.to_string());
    }

    #[test]
    fn run_ok_reports_the_failing_command() {
        let e = run_ok("sh", &["-c", "echo nope >&2; exit 1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sh -c"), "{e}");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn a_hanging_tool_is_killed_at_the_deadline() {
        let t = Instant::now();
        let e = run_with_timeout("sleep", &["30"], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, FixtureError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
