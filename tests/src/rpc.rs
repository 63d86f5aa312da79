//! A Guest client whose every call is bounded by a timeout: the outer `Result` is the
//! fixture's (timed out), the inner one the agent's answer (a `tonic::Status` on error).

use std::time::Duration;

use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::{
    FreezeStatusRequest, FreezeStatusResponse, GuestInitRequest, GuestInitResponse, PingRequest,
    PingResponse, QuiesceRequest, QuiesceResponse, ShutdownRequest, ShutdownResponse, ThawRequest,
    ThawResponse,
};
use tonic::transport::Channel;
use tonic::Status;

use crate::client::{within, RPC_TIMEOUT};
use crate::error::Result;

/// What one bounded call returns: timed out (outer) or the agent's answer (inner).
pub type Answer<T> = Result<std::result::Result<T, Status>>;

/// A Guest client with a per-call timeout.
#[derive(Debug, Clone)]
pub struct Rpc {
    client: GuestClient<Channel>,
    timeout: Duration,
}

impl Rpc {
    /// Wraps a client; calls are bounded by [`RPC_TIMEOUT`].
    pub fn new(client: GuestClient<Channel>) -> Self {
        Self {
            client,
            timeout: RPC_TIMEOUT,
        }
    }

    /// Uses another bound for every call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The raw client, for calls this wrapper does not cover.
    pub fn client(&mut self) -> &mut GuestClient<Channel> {
        &mut self.client
    }

    /// Ping.
    pub async fn ping(&mut self) -> Answer<PingResponse> {
        Ok(
            within(self.timeout, "Ping", self.client.ping(PingRequest {}))
                .await?
                .map(tonic::Response::into_inner),
        )
    }

    /// Init.
    pub async fn init(&mut self, req: GuestInitRequest) -> Answer<GuestInitResponse> {
        Ok(within(self.timeout, "Init", self.client.init(req))
            .await?
            .map(tonic::Response::into_inner))
    }

    /// Quiesce the given mountpoints (empty: every eligible filesystem).
    pub async fn quiesce(&mut self, mountpoints: &[String]) -> Answer<QuiesceResponse> {
        let req = QuiesceRequest {
            mountpoints: mountpoints.to_vec(),
        };
        Ok(within(self.timeout, "Quiesce", self.client.quiesce(req))
            .await?
            .map(tonic::Response::into_inner))
    }

    /// Thaw.
    pub async fn thaw(&mut self) -> Answer<ThawResponse> {
        Ok(
            within(self.timeout, "Thaw", self.client.thaw(ThawRequest {}))
                .await?
                .map(tonic::Response::into_inner),
        )
    }

    /// FreezeStatus.
    pub async fn status(&mut self) -> Answer<FreezeStatusResponse> {
        Ok(within(
            self.timeout,
            "FreezeStatus",
            self.client.freeze_status(FreezeStatusRequest {}),
        )
        .await?
        .map(tonic::Response::into_inner))
    }

    /// Shutdown.
    pub async fn shutdown(&mut self) -> Answer<ShutdownResponse> {
        Ok(within(
            self.timeout,
            "Shutdown",
            self.client.shutdown(ShutdownRequest {}),
        )
        .await?
        .map(tonic::Response::into_inner))
    }
}
