//! The one error type of the benchmark: every failure names what was being done.

use std::path::PathBuf;

/// Why the benchmark (or one of its steps) failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Loop devices, mounts, FIFREEZE and eBPF all need root.
    #[error("the benchmark must run as root (loop devices, mounts, FIFREEZE, eBPF)")]
    NotRoot,
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (mkfs, losetup, fsfreeze ...) failed.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// A path outside this run's scratch directory was about to be frozen or touched.
    #[error("refusing to touch {0}: it is not inside this run's scratch directory")]
    OutsideScratch(PathBuf),
    /// The eBPF observer could not be started.
    #[error("eBPF freeze observer: {0}")]
    Observer(String),
    /// A contender (agent, qemu-ga, fsfreeze) misbehaved.
    #[error("{name}: {detail}")]
    Contender {
        /// Contender label.
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// SIGINT/SIGTERM arrived; everything has been cleaned up.
    #[error("interrupted; scratch filesystems thawed and removed")]
    Interrupted,
    /// The configuration cannot work (e.g. no contender, K of 0).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl BenchError {
    /// A closure turning an `io::Error` into [`BenchError::Io`] with context.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// Same, for `nix` errors.
    pub fn nix(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> Self {
        let what = what.into();
        move |e| Self::Io {
            what,
            source: std::io::Error::from(e),
        }
    }

    /// A contender error.
    pub fn contender(name: &str, detail: impl std::fmt::Display) -> Self {
        Self::Contender {
            name: name.to_owned(),
            detail: detail.to_string(),
        }
    }
}
