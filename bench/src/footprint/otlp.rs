//! A minimal OTLP/gRPC receiver for the footprint run: the agent exports its spans and
//! metrics to it as it would to a collector, and the receiver only counts what arrives (so
//! the agent's export path, queue and connection are exercised, and the report can say that
//! export really happened).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
use tokio::runtime::Runtime;
use tonic::{Request, Response, Status};

use crate::error::BenchError;

/// What the receiver has been sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtlpCounts {
    /// Trace export requests.
    pub span_exports: u64,
    /// Spans in them.
    pub spans: u64,
    /// Metric export requests.
    pub metric_exports: u64,
}

impl OtlpCounts {
    /// What arrived between `earlier` and `self`.
    pub fn since(&self, earlier: &OtlpCounts) -> OtlpCounts {
        OtlpCounts {
            span_exports: self.span_exports - earlier.span_exports,
            spans: self.spans - earlier.spans,
            metric_exports: self.metric_exports - earlier.metric_exports,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    span_exports: AtomicU64,
    spans: AtomicU64,
    metric_exports: AtomicU64,
}

#[derive(Clone, Default)]
struct Collector(Arc<Counters>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.span_exports.fetch_add(1, Ordering::Relaxed);
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        _req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.metric_exports.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A receiver on a free loopback TCP port, served by `rt` until dropped.
pub struct OtlpReceiver {
    /// `tcp://127.0.0.1:PORT`, the agent's `--otlp-endpoint`.
    pub endpoint: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Binds and starts serving on `rt`.
    pub fn start(rt: &Runtime) -> Result<Self, BenchError> {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(BenchError::io("binding the OTLP receiver"))?;
        let addr = listener
            .local_addr()
            .map_err(BenchError::io("the OTLP receiver's address"))?;
        let collector = Collector::default();
        let counters = collector.0.clone();
        let task = rt.spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
            if let Err(e) = served {
                eprintln!("OTLP receiver stopped: {e}");
            }
        });
        Ok(Self {
            endpoint: format!("tcp://{addr}"),
            counters,
            task,
        })
    }

    /// Everything received so far.
    pub fn counts(&self) -> OtlpCounts {
        OtlpCounts {
            span_exports: self.counters.span_exports.load(Ordering::Relaxed),
            spans: self.counters.spans.load(Ordering::Relaxed),
            metric_exports: self.counters.metric_exports.load(Ordering::Relaxed),
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
