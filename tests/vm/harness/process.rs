//! Processes the harness starts (qemu, vhost-device-vsock) and the tools it runs.
//!
//! A [`Spawned`] process is killed by its own PID when dropped, so a failing or panicking test
//! leaves nothing running (and by the kernel if the test process itself is killed); nothing is
//! ever killed by name.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use system_tests::cmd;

use super::error::{Result, VmError};

/// How long a host tool (cp, e2fsck, debugfs, mkinitramfs.sh) may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// A child process owned by the harness: SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Spawned {
    name: String,
    child: Child,
}

impl Spawned {
    /// Starts `command`; `name` is used in messages. The child also gets SIGKILL from the
    /// kernel if the thread that started it dies without dropping this (the test process
    /// killed), so no VM outlives its test.
    pub fn spawn(name: &str, command: &mut Command) -> Result<Self> {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command
            .spawn()
            .map_err(|e| VmError::io(format!("spawn {name}"), e))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(VmError::Exited {
                what: self.name.clone(),
                status: status.to_string(),
            }),
            Err(e) => Err(VmError::io(format!("wait for {}", self.name), e)),
        }
    }

    /// Takes its piped standard output.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // A stopped process dies of SIGKILL as well.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What a finished tool printed and how it exited.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Standard output and standard error, in that order.
    pub text: String,
}

/// Runs `program args...` to completion (bounded by [`TOOL_TIMEOUT`]) whatever its status.
pub fn run_tool<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<ToolOutput> {
    let out = cmd::run_with_timeout(program, args, TOOL_TIMEOUT).map_err(|e| VmError::Command {
        cmd: cmd::describe(program, args),
        status: "not run to completion".into(),
        output: e.to_string(),
    })?;
    Ok(ToolOutput {
        code: out.status.code(),
        text: format!("{}{}", out.stdout, out.stderr),
    })
}

/// Runs a tool and fails unless it exits 0; returns what it printed.
pub fn run_tool_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = run_tool(program, args)?;
    if out.code != Some(0) {
        return Err(VmError::Command {
            cmd: cmd::describe(program, args),
            status: format!("exit {:?}", out.code),
            output: out.text,
        });
    }
    Ok(out.text)
}
