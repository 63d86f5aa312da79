//! The global `tracing` subscriber: log lines on stderr (human or JSON) and, for the agent's
//! own spans, the OpenTelemetry layer. Logs never go to a file, so the agent cannot block on a
//! filesystem it froze itself (open-vm-tools#650, backupessentials#1).
//!
//! Log lines inside an RPC carry the call's span, whose `trace_id` field is the OpenTelemetry
//! trace id (the host's, when it sent a `traceparent`), so a log line can be found from a
//! trace and the other way round.

use opentelemetry_sdk::trace::SdkTracer;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The log filter without `RUST_LOG`: `info`, minus the OpenTelemetry SDK's own diagnostics,
/// which would log every failed export of an absent receiver; the agent logs when exports
/// start and stop failing, and counts every failure (`guest_telemetry_exports_total`).
pub const DEFAULT_FILTER: &str =
    "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Installs the global subscriber; `RUST_LOG` sets the log level (default [`DEFAULT_FILTER`])
/// and does not affect which spans are traced. Does nothing if a subscriber is already
/// installed.
pub fn init(format: LogFormat, tracer: SdkTracer) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Human => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(Targets::new().with_target("guest_agent", Level::INFO));
    let _ = Registry::default().with(logs).with(traces).try_init();
}
