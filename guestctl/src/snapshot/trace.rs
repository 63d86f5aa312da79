//! The snapshot's trace: one root span with a child span per phase, a real trace id even
//! without an exporter (so the `traceparent` sent to the agent always ties the guest's spans
//! to this run), and an explicit, bounded OTLP export at the end.
//!
//! Finished spans are collected in memory rather than handed to a background exporter: a
//! snapshot is short, and exporting once, awaited with a timeout just before exit, means
//! nothing is lost to a process exit and an unreachable collector costs at most the timeout.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_transport::{connect_stream, ConnectUri, TransportError};
use hyper_util::rt::TokioIo;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// The service name of guestctl's spans.
pub const SERVICE_NAME: &str = "guestctl";

/// Why the spans could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is neither an http:// URL nor a guest-transport URI.
    #[error("bad OTLP endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// As given.
        endpoint: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
    /// The collector did not accept the spans.
    #[error("exporting spans to {endpoint} failed: {reason}")]
    Export {
        /// Where to.
        endpoint: String,
        /// The exporter's message.
        reason: String,
    },
    /// The collector did not answer in time.
    #[error("exporting spans to {endpoint} timed out after {timeout:?}")]
    Timeout {
        /// Where to.
        endpoint: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Keeps every finished span until [`SnapshotTrace::export`].
#[derive(Debug, Clone, Default)]
struct Collector(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Collector {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The tracer of one snapshot run and the spans it finished.
pub struct SnapshotTrace {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    collected: Collector,
    resource: Resource,
}

impl std::fmt::Debug for SnapshotTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTrace").finish_non_exhaustive()
    }
}

impl Default for SnapshotTrace {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotTrace {
    /// A tracer that samples everything and keeps the spans in memory.
    pub fn new() -> Self {
        let resource = Resource::builder()
            .with_service_name(SERVICE_NAME)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let collected = Collector::default();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_span_processor(collected.clone())
            .build();
        let tracer = provider.tracer("guestctl");
        Self {
            provider,
            tracer,
            collected,
            resource,
        }
    }

    /// Starts the root span; the returned context is the parent of every phase.
    pub fn root(&self, name: &'static str, attributes: Vec<KeyValue>) -> Context {
        let span = self
            .tracer
            .span_builder(name)
            .with_attributes(attributes)
            .start(&self.tracer);
        Context::new().with_span(span)
    }

    /// Starts a child span of `parent`.
    pub fn child(&self, parent: &Context, name: impl Into<Cow<'static, str>>) -> Context {
        let span = self.tracer.start_with_context(name, parent);
        parent.with_span(span)
    }

    /// How many spans have finished so far.
    #[cfg(test)]
    pub fn finished(&self) -> usize {
        self.collected
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Sends every finished span to the OTLP/gRPC receiver at `endpoint`, within `timeout`.
    pub async fn export(&self, endpoint: &str, timeout: Duration) -> Result<usize, ExportError> {
        let batch =
            std::mem::take(&mut *self.collected.0.lock().unwrap_or_else(|p| p.into_inner()));
        let n = batch.len();
        let mut exporter = build_exporter(endpoint, timeout)?;
        exporter.set_resource(&self.resource);
        match tokio::time::timeout(timeout, exporter.export(batch)).await {
            Err(_) => Err(ExportError::Timeout {
                endpoint: endpoint.to_string(),
                timeout,
            }),
            Ok(Err(e)) => Err(ExportError::Export {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            }),
            Ok(Ok(())) => Ok(n),
        }
    }
}

impl Drop for SnapshotTrace {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The OTLP span exporter for `endpoint`: an `http://HOST:PORT` URL (the form of
/// `OTEL_EXPORTER_OTLP_ENDPOINT`), or a guest-transport URI (`tcp://`, `unix://`, `vsock://`,
/// `hvsock://`) for a receiver reached the way agents are.
fn build_exporter(
    endpoint: &str,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    let builder = if endpoint.starts_with("http://") {
        builder.with_endpoint(endpoint).with_timeout(timeout)
    } else if endpoint.starts_with("https://") {
        return Err(ExportError::BadEndpoint {
            endpoint: endpoint.to_string(),
            reason: "https is not supported; use http:// or a local tcp:// or unix:// receiver"
                .into(),
        });
    } else {
        let uri: ConnectUri = endpoint.parse().map_err(|e| ExportError::BadEndpoint {
            endpoint: endpoint.to_string(),
            reason: format!("expected http://HOST:PORT or a connect URI: {e}"),
        })?;
        builder
            .with_channel(lazy_channel(uri, timeout))
            .with_timeout(timeout)
    };
    builder
        .build()
        .map_err(|e| ExportError::Build(e.to_string()))
}

/// A channel that connects over guest-transport on first use.
fn lazy_channel(uri: ConnectUri, timeout: Duration) -> Channel {
    let connector = tower::service_fn(move |_: http::Uri| {
        let uri = uri.clone();
        async move {
            let s = connect_stream(&uri, timeout).await?;
            Ok::<_, TransportError>(TokioIo::new(s))
        }
    });
    Endpoint::from_static("http://otlp.invalid")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector_lazy(connector)
}

/// The span context of `cx`'s active span.
pub fn span_context(cx: &Context) -> SpanContext {
    cx.span().span_context().clone()
}

/// The W3C `traceparent` of `cx`'s span, e.g. `00-<32 hex>-<16 hex>-01`.
pub fn traceparent(cx: &Context) -> String {
    let sc = span_context(cx);
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// Writes W3C trace context into gRPC metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Adds `traceparent` (and `tracestate` when set) for `cx`'s span to a request's metadata,
/// so the agent's spans for this call become its children.
pub fn inject(cx: &Context, metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(cx, &mut MetadataInjector(metadata));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanKind, TraceId};

    #[test]
    fn children_share_the_root_trace_and_record_parents() {
        let t = SnapshotTrace::new();
        let root = t.root("snapshot", vec![KeyValue::new("k", "v")]);
        let trace_id = span_context(&root).trace_id();
        assert_ne!(trace_id, TraceId::INVALID);
        let child = t.child(&root, "quiesce");
        assert_eq!(span_context(&child).trace_id(), trace_id);
        child.span().end();
        root.span().end();
        let spans = t.collected.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 2);
        let q = spans.iter().find(|s| s.name == "quiesce").unwrap();
        assert_eq!(q.parent_span_id, span_context(&root).span_id());
        assert_eq!(q.span_kind, SpanKind::Internal);
    }

    #[test]
    fn traceparent_is_w3c_and_injected_into_metadata() {
        let t = SnapshotTrace::new();
        let root = t.root("snapshot", vec![]);
        let tp = traceparent(&root);
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01", "sampled");
        let mut md = MetadataMap::new();
        inject(&root, &mut md);
        assert_eq!(md.get("traceparent").unwrap().to_str().unwrap(), tp);
    }

    #[tokio::test]
    async fn export_to_nowhere_fails_within_the_timeout() {
        let t = SnapshotTrace::new();
        t.root("snapshot", vec![]).span().end();
        assert_eq!(t.finished(), 1);
        let started = std::time::Instant::now();
        let err = t
            .export("unix:///nonexistent/otlp.sock", Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            matches!(
                err,
                ExportError::Export { .. } | ExportError::Timeout { .. }
            ),
            "{err}"
        );
        assert!(matches!(
            t.export("https://x:4317", Duration::from_secs(1)).await,
            Err(ExportError::BadEndpoint { .. })
        ));
        assert!(matches!(
            t.export("gopher://x", Duration::from_secs(1)).await,
            Err(ExportError::BadEndpoint { .. })
        ));
    }
}
