//! An OTLP/gRPC receiver built on the `opentelemetry-proto` crate's tonic services: it keeps
//! every span and metric export it gets, for the tests to inspect. Also a "stalled receiver":
//! a TCP listener that the kernel accepts connections for but that never answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, HistogramDataPoint};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct Store {
    spans: Mutex<Vec<Span>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = req
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.spans.lock().unwrap().extend(spans);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.metrics.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running OTLP receiver on 127.0.0.1; stops when dropped.
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    store: Arc<Store>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts the receiver on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Collector::default();
        let store = c.0.clone();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(c.clone()))
                .add_service(MetricsServiceServer::new(c))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Self { addr, store, task }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.store.spans.lock().unwrap().clone()
    }

    /// Histogram points of the metric `name` received so far, latest export last.
    pub fn histogram_points(&self, name: &str) -> Vec<HistogramDataPoint> {
        let exports = self.store.metrics.lock().unwrap();
        exports
            .iter()
            .flat_map(|e| &e.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .filter(|m| m.name == name)
            .filter_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => Some(h.data_points.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The string value of attribute `key`.
pub fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// The numeric value of attribute `key` (int or double).
pub fn attr_num(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match attrs.iter().find(|kv| kv.key == key)?.value.as_ref()? {
        AnyValue {
            value: Some(any_value::Value::IntValue(i)),
        } => Some(*i as f64),
        AnyValue {
            value: Some(any_value::Value::DoubleValue(d)),
        } => Some(*d),
        _ => None,
    }
}

/// A listener whose connections the kernel completes but nobody ever reads or answers.
pub struct StalledReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    _listener: std::net::TcpListener,
}

impl StalledReceiver {
    /// Binds a free loopback port and never accepts.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            addr: listener.local_addr().unwrap(),
            _listener: listener,
        }
    }
}
