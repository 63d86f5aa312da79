//! The one error type of the VM harness: a VM test that cannot set up its world fails with a
//! message naming the step, the command or the wait that went wrong.

use std::path::PathBuf;
use std::time::Duration;

/// Why the harness could not do what a VM test asked.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Something `scripts/setup-vm.sh` provides is missing.
    #[error("{what} is missing at {path}: run `scripts/setup-vm.sh` (or `make vm-test`) first")]
    NotSetUp {
        /// What was looked for.
        what: String,
        /// Where.
        path: PathBuf,
    },
    /// A static guest binary is not built.
    #[error("{path} does not exist: build it with `tests/vm/build-guest.sh` (or `make vm-test`)")]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An external command failed.
    #[error("`{cmd}` failed ({status}): {output}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A bounded wait ran out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A process the harness started exited when it should still run.
    #[error("{what} exited early ({status})")]
    Exited {
        /// Which process.
        what: String,
        /// Its exit status.
        status: String,
    },
    /// The guest's command loop answered something the harness cannot read.
    #[error("guest command channel: {0}")]
    Protocol(String),
    /// A gRPC call to the agent failed.
    #[error("{call}: {reason}")]
    Rpc {
        /// Which call.
        call: String,
        /// Status or transport error text.
        reason: String,
    },
}

impl VmError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result of a harness operation.
pub type Result<T> = std::result::Result<T, VmError>;
