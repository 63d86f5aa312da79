//! gRPC to the agent in the VM through the hybrid vsock socket (the same transport guestctl
//! uses), for what guestctl does not print: the eBPF observer's view in FreezeStatus and the
//! Prometheus text of GetMetrics. Every call is bounded.

use std::future::Future;
use std::time::Duration;

use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::guest_metrics_client::GuestMetricsClient;
use guest_proto::v1::{
    FreezeStatusRequest, FreezeStatusResponse, GetMetricsRequest, PingRequest, PingResponse,
};
use guest_transport::ConnectUri;
use tonic::transport::Channel;

use super::error::{Result, VmError};

/// Bound on connecting (hybrid handshake included).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on one RPC.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(20);

/// A blocking client of the agent at a hybrid vsock URI.
#[derive(Debug)]
pub struct AgentRpc {
    runtime: tokio::runtime::Runtime,
    uri: ConnectUri,
}

impl AgentRpc {
    /// A client of `uri` (`hvsock:///path/vm.sock:2695`); connects per call.
    pub fn new(uri: &str) -> Result<Self> {
        let uri: ConnectUri = uri.parse().map_err(|e| VmError::Rpc {
            call: format!("parse {uri}"),
            reason: format!("{e}"),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| VmError::io("start a tokio runtime", e))?;
        Ok(Self { runtime, uri })
    }

    fn call<T, F, Fut>(&self, name: &str, f: F) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let call = format!("{name} over {}", self.uri);
        self.runtime.block_on(async {
            let channel = guest_transport::connect_channel(&self.uri, CONNECT_TIMEOUT)
                .await
                .map_err(|e| VmError::Rpc {
                    call: call.clone(),
                    reason: e.to_string(),
                })?;
            match tokio::time::timeout(RPC_TIMEOUT, f(channel)).await {
                Err(_) => Err(VmError::Timeout {
                    what: call,
                    after: RPC_TIMEOUT,
                }),
                Ok(Err(status)) => Err(VmError::Rpc {
                    call,
                    reason: format!("{:?}: {}", status.code(), status.message()),
                }),
                Ok(Ok(resp)) => Ok(resp.into_inner()),
            }
        })
    }

    /// Ping.
    pub fn ping(&self) -> Result<PingResponse> {
        self.call("Ping", |ch| async move {
            GuestClient::new(ch).ping(PingRequest {}).await
        })
    }

    /// FreezeStatus (with the eBPF observer's view).
    pub fn freeze_status(&self) -> Result<FreezeStatusResponse> {
        self.call("FreezeStatus", |ch| async move {
            GuestClient::new(ch)
                .freeze_status(FreezeStatusRequest {})
                .await
        })
    }

    /// GuestMetrics/GetMetrics: the agent's Prometheus text.
    pub fn metrics(&self) -> Result<String> {
        self.call("GetMetrics", |ch| async move {
            GuestMetricsClient::new(ch)
                .get_metrics(GetMetricsRequest {})
                .await
        })
        .map(|r| r.text)
    }
}
