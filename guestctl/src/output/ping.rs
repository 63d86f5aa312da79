//! What `guestctl ping` prints: one line per answered ping.

use serde::Serialize;

use super::Render;

/// One line per answered ping (printed as they arrive in text mode).
pub fn ping_line(version: &str, rtt_ms: f64) -> String {
    format!("pong from guest-agent {version} in {rtt_ms:.3} ms")
}

/// Result of `ping`.
#[derive(Debug, Serialize, PartialEq)]
pub struct PingReport {
    /// Agent version.
    pub version: String,
    /// Round-trip time of each ping, milliseconds.
    pub rtt_ms: Vec<f64>,
}

impl Render for PingReport {
    fn human(&self, _now_ms: u64) -> String {
        self.rtt_ms
            .iter()
            .map(|rtt| ping_line(&self.version, *rtt))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    #[test]
    fn ping_renders() {
        let r = PingReport {
            version: "0.1.0".into(),
            rtt_ms: vec![0.412, 1.0],
        };
        assert_eq!(
            r.human(NOW),
            "pong from guest-agent 0.1.0 in 0.412 ms\npong from guest-agent 0.1.0 in 1.000 ms"
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"version":"0.1.0","rtt_ms":[0.412,1.0]}"#
        );
    }
}
