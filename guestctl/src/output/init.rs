//! What `guestctl init` prints.

use serde::Serialize;

use super::Render;

/// Result of `init`.
#[derive(Debug, Serialize, PartialEq)]
pub struct InitReport {
    /// Always true (failures are errors).
    pub initialised: bool,
    /// Number of volumes requested.
    pub volumes: usize,
    /// Whether a network section was sent.
    pub network: bool,
}

impl Render for InitReport {
    fn human(&self, _now_ms: u64) -> String {
        let net = if self.network {
            ", network configured"
        } else {
            ""
        };
        format!("guest initialised: {} volume(s){net}", self.volumes)
    }
}
