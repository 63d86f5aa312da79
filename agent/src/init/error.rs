//! The error Init reports. Its `Display` is the `GuestInitError.reason` the host sees,
//! so every variant says what went wrong and with which value.

use super::network::NetworkError;
use super::validate::ValidationError;
use super::volumes::VolumeError;

/// Why an Init request failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The request is malformed or names something that does not exist; nothing was done.
    #[error("invalid init request: {0}")]
    Invalid(#[from] ValidationError),
    /// A different request was already applied; Init is accepted once per boot.
    #[error(
        "guest already initialised with a different request; Init is accepted once per boot \
         (repeat the original request, or restart the guest to change it)"
    )]
    AlreadyInitialised,
    /// Setting up a volume failed; everything this request did was rolled back.
    #[error("volume {index} (mount_point {mount_point}): {source}")]
    Volume {
        /// Index of the volume in the request.
        index: usize,
        /// Its mount point.
        mount_point: String,
        /// What failed (boxed to keep `InitError` small).
        #[source]
        source: Box<VolumeError>,
    },
    /// Configuring the network failed; everything this request did was rolled back.
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    /// An operation failed and undoing the earlier steps failed too: the guest is
    /// partially initialised. The request is not remembered, so it may be retried,
    /// but the leftovers listed may get in the way.
    #[error("{cause}; rollback incomplete, left behind: {}", failures.join("; "))]
    RollbackIncomplete {
        /// The failure that triggered the rollback.
        cause: Box<InitError>,
        /// One entry per step that could not be undone.
        failures: Vec<String>,
    },
    /// A worker thread of Init panicked or was cancelled (a bug, not a request problem).
    #[error("internal error during init: {0}")]
    Internal(String),
}

impl InitError {
    /// Wraps `self` in [`InitError::RollbackIncomplete`] when `failures` is not empty.
    pub(crate) fn with_rollback(self, failures: Vec<String>) -> Self {
        if failures.is_empty() {
            self
        } else {
            InitError::RollbackIncomplete {
                cause: Box::new(self),
                failures,
            }
        }
    }
}
