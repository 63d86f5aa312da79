//! An OTLP/gRPC receiver on a unix socket, standing in for the host's collector. Placed at
//! `<uds>_<port>`, it receives what the guest's agent exports to `vsock://2:<port>` (the
//! vsock backend turns a guest connection to the host into a connection to that socket); the
//! host's `guestctl snapshot --otlp-endpoint unix://...` can export to the same socket, so one
//! receiver sees both sides of a trace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{number_data_point, Metric, NumberDataPoint};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::{Request, Response, Status};

use super::error::{Result, VmError};

/// One span as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting resource.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id, lowercase hex.
    pub trace_id: String,
    /// Span id, lowercase hex.
    pub span_id: String,
    /// Parent span id, lowercase hex (empty for a root span).
    pub parent_span_id: String,
}

/// What the metric exports received so far say: how many there were, and the latest value of
/// each metric by exporting service and metric name (a histogram's value is its total count, a
/// sum's its total, a gauge's the sum of its points).
#[derive(Debug, Clone, Default)]
struct MetricsSeen {
    exports: usize,
    latest: HashMap<(String, String), f64>,
}

#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    metrics: Arc<Mutex<MetricsSeen>>,
}

/// The value [`MetricsSeen`] keeps for one metric of an export.
fn metric_value(metric: &Metric) -> f64 {
    let number = |p: &NumberDataPoint| match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => 0.0,
    };
    match &metric.data {
        Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.count as f64).sum(),
        Some(Data::Sum(s)) => s.data_points.iter().map(number).sum(),
        Some(Data::Gauge(g)) => g.data_points.iter().map(number).sum(),
        _ => 0.0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|r| r.attributes.iter())
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = service_name(rs.resource.as_ref());
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> std::result::Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut seen = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        seen.exports += 1;
        for rm in request.into_inner().resource_metrics {
            let service = service_name(rm.resource.as_ref());
            for metric in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                let value = metric_value(&metric);
                seen.latest.insert((service.clone(), metric.name), value);
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running receiver; stopped (and its socket removed) on drop.
#[derive(Debug)]
pub struct OtlpReceiver {
    socket: PathBuf,
    collector: Collector,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Serves OTLP traces and metrics on the unix socket `socket`.
    pub fn start(socket: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(socket);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| VmError::io("start a tokio runtime", e))?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(socket)
                .map_err(|e| VmError::io(format!("bind {}", socket.display()), e))?
        };
        let collector = Collector::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = collector.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(served.clone()))
                    .add_service(MetricsServiceServer::new(served))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await;
            });
        });
        Ok(Self {
            socket: socket.to_path_buf(),
            collector,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of metric exports received so far.
    pub fn metric_exports(&self) -> usize {
        self.collector
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .exports
    }

    /// The latest exported value of metric `name` from a service whose name contains
    /// `service`, if one arrived.
    pub fn metric_value(&self, service: &str, name: &str) -> Option<f64> {
        let seen = self
            .collector
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        seen.latest
            .iter()
            .find(|((svc, n), _)| svc.contains(service) && n == name)
            .map(|(_, v)| *v)
    }

    /// Waits until a metric export from `service` carries `name` with a value of at least
    /// `min`; returns that value.
    pub fn wait_metric(
        &self,
        service: &str,
        name: &str,
        min: f64,
        timeout: Duration,
    ) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.metric_value(service, name);
            if let Some(v) = value.filter(|v| *v >= min) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!(
                        "an OTLP metric export from {service} with {name} >= {min} \
                         ({} export(s) so far; latest value {value:?})",
                        self.metric_exports()
                    ),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the spans received satisfy `done`; returns them.
    pub fn wait_spans(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("OTLP spans: {what} (received: {spans:#?})"),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            // Graceful shutdown waits for open connections; the guest's may outlive us.
            let deadline = Instant::now() + Duration::from_secs(3);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
