//! Running the snapshot COMMAND (the disk copy) while the guest is frozen and the VMM paused.
//!
//! The command inherits stdin and stderr; its stdout goes to guestctl's stdout, or to stderr
//! with `--json` so that stdout carries exactly one JSON object. It gets the trace context in
//! its environment (`TRACEPARENT`, the de-facto variable for W3C context in processes, and
//! `GUESTCTL_TRACE_ID`), so a copy tool that traces can join the snapshot's trace.
//!
//! A SIGINT/SIGTERM received by guestctl while the command runs is forwarded to it; if it has
//! not exited [`KILL_GRACE`] later it is killed, so an interrupted snapshot reaches the thaw.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

use super::signals::Interrupts;

/// How long a command may take to exit after a forwarded signal before it is killed.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEnd {
    /// It exited or was killed by a signal.
    Exited(ExitStatus),
    /// It could not be started.
    SpawnFailed(String),
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// Send its stdout to our stderr (for `--json`).
    pub stdout_to_stderr: bool,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// Runs the command to completion, forwarding interrupts.
pub async fn run(spec: &CommandSpec, interrupts: &Interrupts) -> CommandEnd {
    let Some((program, args)) = spec.argv.split_first() else {
        return CommandEnd::SpawnFailed("empty command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit());
    if spec.stdout_to_stderr {
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => cmd.stdout(Stdio::from(fd)),
            Err(e) => return CommandEnd::SpawnFailed(format!("cannot duplicate stderr: {e}")),
        };
    } else {
        cmd.stdout(Stdio::inherit());
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CommandEnd::SpawnFailed(format!(
                "cannot run {}: {e}",
                program.to_string_lossy()
            ))
        }
    };
    let pid = child.id();
    let status = tokio::select! {
        st = child.wait() => st,
        sig = interrupts.wait() => {
            forward(pid, sig);
            match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(st) => st,
                Err(_) => {
                    eprintln!("guestctl: the command ignored {sig} for {KILL_GRACE:?}; killing it");
                    let _ = child.start_kill();
                    child.wait().await
                }
            }
        }
    };
    match status {
        Ok(st) => CommandEnd::Exited(st),
        Err(e) => CommandEnd::SpawnFailed(format!("waiting for the command failed: {e}")),
    }
}

fn forward(pid: Option<u32>, sig: Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn spec(argv: &[&str]) -> CommandSpec {
        CommandSpec {
            argv: argv.iter().map(OsString::from).collect(),
            stdout_to_stderr: true,
            env: vec![("GUESTCTL_TEST_VAR".into(), "42".into())],
        }
    }

    #[tokio::test]
    async fn exit_codes_and_environment() {
        let _serial = crate::snapshot::signals::SIGNAL_TESTS.lock().await;
        let i = Interrupts::install().unwrap();
        let ok = run(&spec(&["sh", "-c", "test \"$GUESTCTL_TEST_VAR\" = 42"]), &i).await;
        assert!(
            matches!(ok, CommandEnd::Exited(st) if st.success()),
            "{ok:?}"
        );
        let bad = run(&spec(&["sh", "-c", "exit 3"]), &i).await;
        assert!(
            matches!(bad, CommandEnd::Exited(st) if st.code() == Some(3)),
            "{bad:?}"
        );
        let killed = run(&spec(&["sh", "-c", "kill -KILL $$"]), &i).await;
        assert!(
            matches!(killed, CommandEnd::Exited(st) if st.signal() == Some(9)),
            "{killed:?}"
        );
        let missing = run(&spec(&["/nonexistent/copy-tool"]), &i).await;
        assert!(
            matches!(&missing, CommandEnd::SpawnFailed(m) if m.contains("/nonexistent/copy-tool")),
            "{missing:?}"
        );
    }
}
