//! The Prometheus text exposition: a `prometheus` registry fed by the OpenTelemetry SDK through
//! `opentelemetry-prometheus`, rendered for `/metrics` ([`super::http`]) and `GetMetrics`.
//!
//! The bridge is configured for plain Prometheus conventions: no `otel_scope_*` labels on every
//! series (one instrumentation scope, so they would only add noise) and no `target_info` family
//! (`guest_agent_build_info` says what runs). Unit suffixes and `_total` come from the bridge.

use opentelemetry_prometheus::PrometheusExporter;
use prometheus::{Encoder, Registry, TextEncoder};

/// The `Content-Type` of the text format (version 0.0.4), as Prometheus expects it.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Why the exposition could not be built or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ExpositionError {
    /// The OpenTelemetry-to-Prometheus bridge could not be built.
    #[error("cannot build the Prometheus exporter: {0}")]
    Exporter(String),
    /// Encoding the text format failed.
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] prometheus::Error),
}

/// A registry plus the reader that fills it at every gather.
#[derive(Clone, Debug)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// Creates the registry and the metric reader to register with the meter provider.
    pub fn new() -> Result<(Self, PrometheusExporter), ExpositionError> {
        let registry = Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| ExpositionError::Exporter(e.to_string()))?;
        Ok((Self { registry }, reader))
    }

    /// Collects every instrument now (running the observable callbacks, which only read
    /// snapshots) and renders the text format.
    pub fn render(&self) -> Result<String, ExpositionError> {
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(16 << 10);
        TextEncoder::new().encode(&families, &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{ExportStats, FsOp, Metrics, OpResult, Origin};
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::SdkMeterProvider;
    use std::sync::Arc;
    use std::time::Duration;

    fn setup() -> (Exposition, Metrics, SdkMeterProvider) {
        let (expo, reader) = Exposition::new().unwrap();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let m = Metrics::new(
            &provider.meter("guest-agent"),
            Arc::new(ExportStats::default()),
        );
        (expo, m, provider)
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let (expo, m, _p) = setup();
        m.record_freeze_duration("/mnt/a", "ext4", Origin::Agent, Duration::from_millis(1500));
        m.record_fs_operation(FsOp::Freeze, OpResult::Success);
        m.record_ping();
        let text = expo.render().unwrap();
        assert!(
            text.contains("# TYPE guest_fs_freeze_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains(
            "guest_fs_freeze_duration_seconds_bucket{fstype=\"ext4\",mountpoint=\"/mnt/a\",origin=\"agent\",le=\"2.5\"} 1"
        ), "{text}");
        assert!(
            text.contains("guest_fs_freeze_operations_total{op=\"freeze\",result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("guest_fs_freeze_operations_total{op=\"thaw\",result=\"watchdog\"} 0"),
            "{text}"
        );
        assert!(text.contains("guest_ping_requests_total 1"), "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_resident_memory_bytes gauge"),
            "{text}"
        );
        assert!(text.contains("guest_agent_build_info{version="), "{text}");
        assert!(!text.contains("otel_scope"), "{text}");
        assert!(!text.contains("target_info"), "{text}");
    }
}
