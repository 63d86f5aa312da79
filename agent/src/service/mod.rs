//! The `boxlite.v1.Guest` service: validates the call, enforces frozen-mode discipline, and
//! delegates to the initialiser and the freezer. No syscalls here.

pub mod convert;

use std::sync::Arc;

use guest_proto::v1 as pb;
use guest_proto::v1::guest_server::Guest;
use tonic::{Request, Response, Status};

use crate::error::ServiceError;
use crate::freezer::Freezer;
use crate::init::Initializer;
use crate::observer::Observer;
use crate::shutdown::Shutdown;

/// The agent version reported by Ping.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Implementation of the Guest service.
pub struct GuestService {
    freezer: Freezer,
    init: Arc<Initializer>,
    shutdown: Shutdown,
    observer: Observer,
}

impl GuestService {
    /// Wires the service to its freezer, initialiser, shutdown signal and eBPF observer.
    pub fn new(
        freezer: Freezer,
        init: Arc<Initializer>,
        shutdown: Shutdown,
        observer: Observer,
    ) -> Self {
        Self {
            freezer,
            init,
            shutdown,
            observer,
        }
    }

    fn refuse_if_frozen(&self, rpc: &'static str) -> Result<(), ServiceError> {
        let status = self.freezer.status();
        if status.frozen.is_empty() {
            return Ok(());
        }
        let frozen = status
            .frozen
            .iter()
            .map(|f| f.fs.mount_point.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(ServiceError::FrozenMode { rpc, frozen })
    }
}

#[tonic::async_trait]
impl Guest for GuestService {
    async fn init(
        &self,
        request: Request<pb::GuestInitRequest>,
    ) -> Result<Response<pb::GuestInitResponse>, Status> {
        self.refuse_if_frozen("Init")?;
        let req = request.into_inner();
        let result = match self.init.apply(&req).await {
            Ok(outcome) => {
                tracing::info!(?outcome, volumes = req.volumes.len(), "init");
                pb::guest_init_response::Result::Success(pb::GuestInitSuccess {})
            }
            Err(e) => {
                tracing::warn!(error = %e, "init refused");
                pb::guest_init_response::Result::Error(pb::GuestInitError {
                    reason: e.to_string(),
                })
            }
        };
        Ok(Response::new(pb::GuestInitResponse {
            result: Some(result),
        }))
    }

    async fn ping(
        &self,
        _: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {
            version: VERSION.to_string(),
        }))
    }

    async fn shutdown(
        &self,
        _: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        tracing::info!("shutdown requested");
        let thawed = self.freezer.thaw().await.map_err(ServiceError::from)?;
        if thawed.thawed_count > 0 {
            tracing::info!(count = thawed.thawed_count, "thawed before shutdown");
        }
        self.shutdown.trigger();
        Ok(Response::new(pb::ShutdownResponse {}))
    }

    async fn quiesce(
        &self,
        request: Request<pb::QuiesceRequest>,
    ) -> Result<Response<pb::QuiesceResponse>, Status> {
        if self.shutdown.is_triggered() {
            return Err(ServiceError::ShuttingDown.into());
        }
        let req = request.into_inner();
        let report = self.freezer.quiesce(req.mountpoints).await.map_err(|e| {
            tracing::warn!(error = %e, "quiesce failed");
            ServiceError::from(e)
        })?;
        Ok(Response::new(convert::quiesce_response(&report)))
    }

    async fn thaw(
        &self,
        _: Request<pb::ThawRequest>,
    ) -> Result<Response<pb::ThawResponse>, Status> {
        let report = self.freezer.thaw().await.map_err(|e| {
            tracing::warn!(error = %e, "thaw failed");
            ServiceError::from(e)
        })?;
        Ok(Response::new(convert::thaw_response(&report)))
    }

    async fn freeze_status(
        &self,
        _: Request<pb::FreezeStatusRequest>,
    ) -> Result<Response<pb::FreezeStatusResponse>, Status> {
        let mut resp = convert::status_response(&self.freezer.status());
        convert::add_observer(&mut resp, &self.observer);
        Ok(Response::new(resp))
    }
}
