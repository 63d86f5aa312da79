//! Telemetry for the host: Prometheus metrics (`/metrics` over vsock/tcp/unix and the
//! `GetMetrics` RPC), OpenTelemetry traces and metrics over OTLP, and trace context from the
//! host's `traceparent`.
//!
//! One file per concern: [`metrics`] defines every instrument; [`exposition`] renders them in
//! the Prometheus text format and [`http`] serves it; [`otel`] builds the OTLP pipelines with
//! the bounded [`span_queue`]; [`propagation`] reads W3C trace context from gRPC metadata;
//! [`grpc_layer`] makes a span and the gRPC metrics per call; [`rpc`] serves `GetMetrics`;
//! [`freezer`] listens to the freezer's events for its per-filesystem and per-phase spans;
//! [`writers`] feeds the eBPF observer's state and events into the metrics; [`process`] reads
//! `/proc/self`; [`subscriber`] installs logging plus tracing. The flags live in
//! [`crate::config::telemetry`]; [`otel::OtlpConfig::from_args`] reads them.
//!
//! The pipeline is process-global, like a logger: [`install`] builds it once at start (inside
//! the tokio runtime, before anything records), and [`metrics`] hands out the instruments to
//! every part of the agent without threading a handle through each constructor. Code that runs
//! without [`install`] (unit tests, library users) gets a pipeline with Prometheus exposition
//! only, so recording always works and never blocks.

pub mod exposition;
pub mod freezer;
pub mod grpc_layer;
pub mod http;
pub mod metrics;
pub mod otel;
pub mod process;
pub mod propagation;
pub mod rpc;
pub mod span_queue;
pub mod subscriber;
pub mod writers;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Stream};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use exposition::{Exposition, ExpositionError};
use metrics::{ExportStats, Metrics};
use otel::{OtelError, OtlpConfig};

/// The instrumentation scope name of the agent's meter and tracer.
pub const SCOPE: &str = "guest-agent";

/// Why the telemetry pipeline could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The Prometheus exposition could not be built.
    #[error(transparent)]
    Exposition(#[from] ExpositionError),
    /// An OTLP exporter could not be built.
    #[error(transparent)]
    Otel(#[from] OtelError),
    /// [`install`] ran after the pipeline was already in use.
    #[error("telemetry is already installed (install must run once, before anything records)")]
    AlreadyInstalled,
}

/// Label sets kept per instrument. The SDK's default limit (2,000) makes it preallocate a
/// 135 KiB table per instrument and reader (5.9 MiB mapped, ~1 MiB resident for the agent's
/// two readers, issue 13); the agent's labels come from closed sets and the mounted
/// filesystems, far fewer. Beyond the limit the SDK adds to one overflow series
/// (`otel_metric_overflow="true"`) instead of a new one: nothing is lost, only split less.
pub const CARDINALITY_LIMIT: usize = 256;

/// The view every instrument goes through: its own name, unit and buckets, and
/// [`CARDINALITY_LIMIT`].
fn bounded_cardinality(_: &opentelemetry_sdk::metrics::Instrument) -> Option<Stream> {
    Stream::builder()
        .with_cardinality_limit(CARDINALITY_LIMIT)
        .build()
        .ok()
}

/// The process's telemetry pipeline.
pub struct Telemetry {
    metrics: Metrics,
    exposition: Exposition,
    stats: Arc<ExportStats>,
    meter_provider: SdkMeterProvider,
    tracer_provider: SdkTracerProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<Telemetry> = OnceLock::new();

impl Telemetry {
    /// Builds the pipeline: Prometheus exposition always, OTLP when `otlp` is given (then
    /// `runtime` runs the span export task).
    fn build(
        otlp: Option<&OtlpConfig>,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<Self, TelemetryError> {
        let stats = Arc::new(ExportStats::default());
        let (exposition, prom_reader) = Exposition::new()?;
        let mut meters = SdkMeterProvider::builder()
            .with_resource(otel::resource())
            .with_view(bounded_cardinality)
            .with_reader(prom_reader);
        let tracer_provider = match (otlp, runtime) {
            (Some(cfg), Some(rt)) => {
                let _entered = rt.enter();
                let channel = otel::channel(&cfg.endpoint, cfg.timeout);
                meters =
                    meters.with_reader(otel::metric_reader(cfg, channel.clone(), stats.clone())?);
                otel::tracer_provider(Some((cfg, channel, rt)), stats.clone())?
            }
            (Some(_), None) => return Err(OtelError::NoRuntime.into()),
            (None, _) => otel::tracer_provider(None, stats.clone())?,
        };
        let meter_provider = meters.build();
        let metrics = Metrics::new(&meter_provider.meter(SCOPE), stats.clone());
        Ok(Self {
            metrics,
            exposition,
            stats,
            meter_provider,
            tracer_provider,
        })
    }

    /// Every instrument.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus exposition (shared with the `/metrics` server).
    pub fn exposition(&self) -> &Exposition {
        &self.exposition
    }

    /// The metrics in the Prometheus text format, as `/metrics` and `GetMetrics` return them.
    pub fn render(&self) -> Result<String, ExpositionError> {
        self.exposition.render()
    }

    /// The OTLP pipeline's own counts (exports, dropped spans).
    pub fn export_stats(&self) -> &ExportStats {
        &self.stats
    }

    /// The tracer for the `tracing-opentelemetry` layer.
    pub fn tracer(&self) -> SdkTracer {
        self.tracer_provider.tracer(SCOPE)
    }

    /// Exports what is still queued and stops the exporters, within `timeout` in total; an
    /// unreachable receiver costs at most that. Call once, on the way out.
    pub async fn shutdown(&self, timeout: Duration) {
        let traces = self.tracer_provider.clone();
        let meters = self.meter_provider.clone();
        let work = tokio::task::spawn_blocking(move || {
            let half = timeout / 2;
            if let Err(e) = traces.shutdown_with_timeout(half) {
                tracing::debug!(error = %e, "trace pipeline shutdown");
            }
            if let Err(e) = meters.shutdown_with_timeout(half) {
                tracing::debug!(error = %e, "metric pipeline shutdown");
            }
        });
        if tokio::time::timeout(timeout, work).await.is_err() {
            tracing::warn!("telemetry did not flush within {timeout:?}; dropped");
        }
    }
}

/// Builds and installs the process's pipeline. Call once, inside the tokio runtime, before
/// anything records a metric.
pub fn install(otlp: Option<OtlpConfig>) -> Result<&'static Telemetry, TelemetryError> {
    let runtime = tokio::runtime::Handle::try_current().ok();
    let t = Telemetry::build(otlp.as_ref(), runtime.as_ref())?;
    GLOBAL
        .set(t)
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(global())
}

/// The installed pipeline, or (when [`install`] was never called) a Prometheus-only one.
pub fn global() -> &'static Telemetry {
    GLOBAL.get_or_init(|| {
        Telemetry::build(None, None)
            .expect("the Prometheus-only pipeline has no fallible part in practice")
    })
}

/// Every instrument of the agent.
pub fn metrics() -> &'static Metrics {
    global().metrics()
}
