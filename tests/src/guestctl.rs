//! Running the real `guestctl` binary with a bounded wait and looking at what it printed.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use crate::bins;
use crate::client::within;
use crate::error::{FixtureError, Result};

/// Default bound on one guestctl run.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// What one guestctl run did.
#[derive(Debug, Clone)]
pub struct Ctl {
    /// The arguments it ran with.
    pub args: Vec<String>,
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ctl {
    /// Standard output parsed as one JSON value (what `--json` prints).
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(self.stdout.trim()).map_err(|e| FixtureError::Parse {
            what: format!("guestctl {:?} output as JSON", self.args),
            reason: format!("{e}\n{self}"),
        })
    }
}

impl fmt::Display for Ctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guestctl {:?} -> exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `guestctl args...` (killed after `timeout`).
pub async fn run_with_timeout(args: &[&str], timeout: Duration) -> Result<Ctl> {
    let bin = bins::guestctl()?;
    let child = tokio::process::Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| FixtureError::io(format!("spawn {}", bin.display()), e))?;
    let out = within(
        timeout,
        &format!("guestctl {args:?}"),
        child.wait_with_output(),
    )
    .await?
    .map_err(|e| FixtureError::io("wait for guestctl", e))?;
    let ctl = Ctl {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Captured by libtest: visible only when the test fails.
    eprintln!("{ctl}");
    Ok(ctl)
}

/// Runs `guestctl args...` with the default bound.
pub async fn run(args: &[&str]) -> Result<Ctl> {
    run_with_timeout(args, CTL_TIMEOUT).await
}
