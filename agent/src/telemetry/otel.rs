//! The OpenTelemetry pipelines: a tracer provider (always, so spans have trace ids that logs
//! can carry) whose spans go to OTLP when `--otlp-endpoint` is given, and the OTLP reader of
//! the same meter provider that feeds `/metrics`.
//!
//! The OTLP connection is a lazy tonic `Channel` over `guest_transport` (tcp, unix, vsock to the
//! host CID, or hybrid vsock), so a receiver that is absent at start costs nothing and is
//! reached when it appears. Every export is bounded by `timeout`; spans leave through the
//! bounded [`QueueingSpanProcessor`], metrics through the SDK's periodic reader, which runs on
//! its own thread. Neither can delay an RPC or a freeze.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use guest_transport::{connect_stream, ConnectUri, TransportError};
use hyper_util::rt::TokioIo;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, Temporality};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;
use tonic::transport::{Channel, Endpoint};

use super::metrics::{ExportStats, Signal};
use super::span_queue::{QueueConfig, QueueingSpanProcessor};
use crate::config::telemetry::TelemetryArgs;

/// The service name in the OTLP resource.
pub const SERVICE_NAME: &str = "guest-agent";

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The receiver (an OpenTelemetry Collector's OTLP/gRPC port, or the host's relay).
    pub endpoint: ConnectUri,
    /// Longest one export (connect included) may take.
    pub timeout: Duration,
    /// How often metrics are pushed.
    pub metrics_interval: Duration,
    /// Span queue bounds.
    pub queue: QueueConfig,
}

impl OtlpConfig {
    /// The settings the command line asks for, if it gives an endpoint.
    pub fn from_args(args: &TelemetryArgs) -> Option<Self> {
        let endpoint = args.otlp_endpoint.clone()?;
        Some(Self {
            endpoint,
            timeout: args.otlp_timeout,
            metrics_interval: args.otlp_metrics_interval,
            queue: QueueConfig {
                capacity: args.otlp_queue_size.max(1),
                ..QueueConfig::default()
            },
        })
    }
}

/// Why the OTLP pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// An OTLP exporter could not be built.
    #[error("cannot build the OTLP {signal} exporter: {reason}")]
    Exporter {
        /// traces or metrics.
        signal: &'static str,
        /// The exporter's message.
        reason: String,
    },
    /// OTLP export needs the tokio runtime, and none was running.
    #[error("the OTLP exporters must be set up inside the tokio runtime")]
    NoRuntime,
}

/// The resource every span and metric point carries.
pub fn resource() -> Resource {
    Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// A lazy channel to `endpoint`: nothing is connected until the first export, and every
/// connection attempt and request is bounded by `timeout`. Call inside a tokio runtime.
pub fn channel(endpoint: &ConnectUri, timeout: Duration) -> Channel {
    let target = endpoint.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        let target = target.clone();
        async move {
            let s = connect_stream(&target, timeout).await?;
            Ok::<_, TransportError>(TokioIo::new(s))
        }
    });
    Endpoint::from_static("http://otlp.invalid")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector_lazy(connector)
}

/// The tracer provider: parent-based sampling (the host's decision wins; root spans are
/// sampled), spans to OTLP when `otlp` is given, otherwise nowhere.
pub fn tracer_provider(
    otlp: Option<(&OtlpConfig, Channel, &tokio::runtime::Handle)>,
    stats: Arc<ExportStats>,
) -> Result<SdkTracerProvider, OtelError> {
    let resource = resource();
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource.clone());
    if let Some((cfg, channel, runtime)) = otlp {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_channel(channel)
            .with_timeout(cfg.timeout)
            .build()
            .map_err(|e| OtelError::Exporter {
                signal: "traces",
                reason: e.to_string(),
            })?;
        exporter.set_resource(&resource);
        let queue = QueueConfig {
            export_timeout: cfg.timeout,
            ..cfg.queue
        };
        builder = builder.with_span_processor(QueueingSpanProcessor::spawn(
            exporter, queue, stats, runtime,
        ));
    }
    Ok(builder.build())
}

/// The OTLP metric reader: cumulative sums (as Prometheus sees them), pushed every
/// `metrics_interval` from the SDK's reader thread; every export is counted.
pub fn metric_reader(
    cfg: &OtlpConfig,
    channel: Channel,
    stats: Arc<ExportStats>,
) -> Result<PeriodicReader<CountingExporter<opentelemetry_otlp::MetricExporter>>, OtelError> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .with_timeout(cfg.timeout)
        .with_temporality(Temporality::Cumulative)
        .build()
        .map_err(|e| OtelError::Exporter {
            signal: "metrics",
            reason: e.to_string(),
        })?;
    Ok(PeriodicReader::builder(CountingExporter {
        inner: exporter,
        stats,
        failing: AtomicBool::new(false),
    })
    .with_interval(cfg.metrics_interval)
    .build())
}

/// A metric exporter that counts its exports' outcomes in [`ExportStats`] and logs when they
/// start and stop failing (not every failure).
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    stats: Arc<ExportStats>,
    failing: AtomicBool,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let r = self.inner.export(metrics).await;
        self.stats.export(Signal::Metrics, r.is_ok());
        let was_failing = self.failing.swap(r.is_err(), Ordering::Relaxed);
        match &r {
            Err(e) if !was_failing => {
                tracing::warn!(error = %e, "OTLP metric export failed; retrying every interval")
            }
            Ok(()) if was_failing => tracing::info!("OTLP metric export works again"),
            _ => {}
        }
        r
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
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
    fn the_flags_give_the_otlp_settings() {
        let c = Cli::try_parse_from([
            "x",
            "--otlp-endpoint",
            "vsock://2:4317",
            "--otlp-timeout",
            "0.5",
        ])
        .unwrap();
        let o = OtlpConfig::from_args(&c.t).unwrap();
        assert_eq!(o.endpoint, ConnectUri::Vsock { cid: 2, port: 4317 });
        assert_eq!(o.timeout, Duration::from_millis(500));
        assert_eq!(o.metrics_interval, Duration::from_secs(10));
        assert_eq!(o.queue.capacity, 2048);
        let none = Cli::try_parse_from(["x"]).unwrap();
        assert!(OtlpConfig::from_args(&none.t).is_none());
    }

    #[test]
    fn a_zero_queue_size_still_holds_one_span() {
        let c = Cli::try_parse_from([
            "x",
            "--otlp-endpoint",
            "tcp://127.0.0.1:4317",
            "--otlp-queue-size",
            "0",
        ])
        .unwrap();
        assert_eq!(OtlpConfig::from_args(&c.t).unwrap().queue.capacity, 1);
    }
}
