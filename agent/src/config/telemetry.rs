//! Command-line flags of the telemetry (flattened into the agent's [`super::Config`]); the
//! telemetry turns them into its settings ([`crate::telemetry::otel::OtlpConfig::from_args`]).

use std::str::FromStr;
use std::time::Duration;

use guest_transport::{ConnectUri, ListenUri};

use super::values::parse_secs;

/// The vsock port of `/metrics` in a guest (next to the Guest service's 2695).
pub const DEFAULT_METRICS_VSOCK_PORT: u32 = 2696;

/// `--metrics-listen`: a listen URI, or `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// No `/metrics` listener (GetMetrics still works).
    Off,
    /// Serve `/metrics` here.
    Uri(ListenUri),
}

impl FromStr for MetricsListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
            return Ok(MetricsListen::Off);
        }
        s.parse()
            .map(MetricsListen::Uri)
            .map_err(|e| format!("{e}"))
    }
}

/// Metrics and tracing flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Serve Prometheus metrics (GET /metrics) on vsock://CID:PORT, tcp://ADDR:PORT or
    /// unix:///PATH, or `off`. Default: vsock://-1:2696 when the Guest service itself listens
    /// on its default vsock port (no --listen given), else off.
    #[arg(long, value_name = "URI|off")]
    pub metrics_listen: Option<MetricsListen>,

    /// Export traces and metrics over OTLP/gRPC to tcp://HOST:PORT, vsock://2:PORT (a relay
    /// on the host), unix:///PATH or hvsock:///PATH:PORT. Default: no export.
    #[arg(long, value_name = "URI")]
    pub otlp_endpoint: Option<ConnectUri>,

    /// Push metrics over OTLP this often.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub otlp_metrics_interval: Duration,

    /// Longest one OTLP export (connect included) may take; its data is then dropped.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub otlp_timeout: Duration,

    /// Finished spans waiting for export at most; more are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub otlp_queue_size: usize,
}

impl TelemetryArgs {
    /// Where to serve `/metrics`, if anywhere. Without the flag, the guest default (a vsock
    /// port) applies only when `guest_default` says the service uses its default vsock
    /// listener too: an agent started with explicit listeners (development, tests) opens no
    /// port it was not asked for.
    pub fn metrics_listen(&self, guest_default: bool) -> Option<ListenUri> {
        match &self.metrics_listen {
            Some(MetricsListen::Off) => None,
            Some(MetricsListen::Uri(u)) => Some(u.clone()),
            None if guest_default && std::path::Path::new("/dev/vsock").exists() => {
                Some(ListenUri::Vsock {
                    cid: guest_transport::CID_ANY,
                    port: DEFAULT_METRICS_VSOCK_PORT,
                })
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        t: TelemetryArgs,
    }

    #[test]
    fn parses_the_flags() {
        let c = Cli::try_parse_from([
            "x",
            "--metrics-listen",
            "tcp://127.0.0.1:0",
            "--otlp-endpoint",
            "vsock://2:4317",
            "--otlp-timeout",
            "0.5",
        ])
        .unwrap();
        assert!(matches!(
            c.t.metrics_listen(false),
            Some(ListenUri::Tcp { .. })
        ));
        assert_eq!(
            c.t.otlp_endpoint,
            Some(ConnectUri::Vsock { cid: 2, port: 4317 })
        );
        assert_eq!(c.t.otlp_timeout, Duration::from_millis(500));
        assert_eq!(c.t.otlp_metrics_interval, Duration::from_secs(10));
        assert_eq!(c.t.otlp_queue_size, 2048);
    }

    #[test]
    fn off_disables_and_bad_uris_are_refused() {
        let c = Cli::try_parse_from(["x", "--metrics-listen", "off"]).unwrap();
        assert_eq!(c.t.metrics_listen(false), None);
        assert!(c.t.otlp_endpoint.is_none());
        assert!(Cli::try_parse_from(["x", "--metrics-listen", "http://x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--otlp-endpoint", "ftp://x"]).is_err());
    }
}
