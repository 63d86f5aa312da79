//! `boxlite.v1.GuestMetrics/GetMetrics`: the `/metrics` text over the agent's gRPC port, for
//! hosts that open only that port (as Kata's shim does with its agent).

use guest_proto::v1 as pb;
use guest_proto::v1::guest_metrics_server::{GuestMetrics, GuestMetricsServer};
use tonic::{Request, Response, Status};

/// The GetMetrics service; renders the process's exposition on each call.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsService;

impl MetricsService {
    /// The tonic service to add to the server.
    pub fn server() -> GuestMetricsServer<MetricsService> {
        GuestMetricsServer::new(MetricsService).max_encoding_message_size(16 << 20)
    }
}

#[tonic::async_trait]
impl GuestMetrics for MetricsService {
    async fn get_metrics(
        &self,
        _: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let text = super::global()
            .render()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::GetMetricsResponse { text }))
    }
}
