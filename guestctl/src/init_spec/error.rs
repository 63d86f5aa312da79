//! Why a `guestctl init` request could not be built.

use std::path::PathBuf;

/// Why the init request could not be built (a usage error: exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InitSpecError {
    /// The spec file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spec file is not valid JSON of the expected shape.
    #[error("{}: invalid init spec: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde's error (with line and column).
        source: serde_json::Error,
    },
    /// A `--volume`/`--virtiofs` argument is malformed.
    #[error("bad {flag} {value:?}: {reason}")]
    BadFlag {
        /// The flag, e.g. `--volume`.
        flag: &'static str,
        /// The argument as given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A volume (from either source) is invalid.
    #[error("volume {index} ({mount_point:?}): {reason}")]
    BadVolume {
        /// 1-based position in the list.
        index: usize,
        /// Its mount point.
        mount_point: String,
        /// What is wrong.
        reason: String,
    },
    /// The network section is invalid.
    #[error("network: {0}")]
    BadNetwork(String),
}
