//! What `guestctl shutdown` prints.

use serde::Serialize;

use super::Render;

/// Result of `shutdown`.
#[derive(Debug, Serialize, PartialEq)]
pub struct ShutdownReport {
    /// Always true (failures are errors).
    pub shutdown: bool,
}

impl Render for ShutdownReport {
    fn human(&self, _now_ms: u64) -> String {
        "agent is shutting down".to_string()
    }
}
