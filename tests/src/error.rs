//! The one error type of the fixtures: a test that cannot set up its world fails with a
//! message saying which command or wait went wrong, never with a bare `unwrap` panic.

use std::path::PathBuf;
use std::time::Duration;

/// Why a fixture could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// An external command (mkfs, losetup, mount, ip, ...) exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line as run.
        cmd: String,
        /// Exit status text.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A bounded wait ran out: the thing waited for did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A binary under test is not built.
    #[error("{path} does not exist: run `cargo build --workspace` first")]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The agent exited or never became ready.
    #[error("guest-agent did not start: {reason}\n--- agent log ---\n{logs}")]
    AgentStart {
        /// What happened.
        reason: String,
        /// Everything it logged.
        logs: String,
    },
    /// A gRPC connection could not be established.
    #[error("cannot connect to {uri}: {reason}")]
    Connect {
        /// The address.
        uri: String,
        /// Transport error text.
        reason: String,
    },
    /// A writer behaved differently from what the test expected.
    #[error("writer on {target}: {reason}")]
    Writer {
        /// File it writes.
        target: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Output of a tool could not be understood.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was parsed.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

impl FixtureError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result of a fixture operation.
pub type Result<T> = std::result::Result<T, FixtureError>;
