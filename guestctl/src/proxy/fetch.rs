//! Fetching one guest's metrics, and pinging it, each bounded by a timeout.
//!
//! HTTP targets: a fresh stream per scrape from guest-transport (`connect_stream`, which does
//! the hybrid vsock handshake where needed), HTTP/1.1 `GET /metrics` with hyper's client over
//! it, status 200 required, body capped at [`MAX_BODY`]. gRPC targets: the `GetMetrics` RPC
//! of the `GuestMetrics` service. Pings use the Guest service's `Ping`. gRPC channels are
//! kept between scrapes and dropped after any failure, so a restarted agent is reconnected.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::guest_metrics_client::GuestMetricsClient;
use guest_proto::v1::{GetMetricsRequest, PingRequest};
use guest_transport::{
    connect_channel_with, connect_stream_with, ClientTls, ConnectUri, TransportError,
};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tonic::transport::Channel;

use crate::grpc_code::code_name;

/// Largest metrics body accepted from a guest.
pub const MAX_BODY: usize = 16 << 20;

/// Why a fetch or ping failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] TransportError),
    /// The HTTP exchange failed.
    #[error("HTTP error: {0}")]
    Http(String),
    /// The guest answered with a non-200 status.
    #[error("GET /metrics answered {0}")]
    Status(http::StatusCode),
    /// The body is not UTF-8 or too large.
    #[error("bad body: {0}")]
    Body(String),
    /// A gRPC call failed.
    #[error("{op} failed: {code}: {message}")]
    Rpc {
        /// GetMetrics or Ping.
        op: &'static str,
        /// Status code name.
        code: &'static str,
        /// Status message.
        message: String,
    },
    /// The whole fetch did not finish in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl FetchError {
    fn rpc(op: &'static str, s: tonic::Status) -> Self {
        FetchError::Rpc {
            op,
            code: code_name(s.code()),
            message: s.message().to_string(),
        }
    }
}

/// GET /metrics over a fresh stream to `uri`, all within `timeout`.
pub async fn http_metrics(
    uri: &ConnectUri,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<String, FetchError> {
    tokio::time::timeout(timeout, http_metrics_inner(uri, timeout, tls))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn http_metrics_inner(
    uri: &ConnectUri,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<String, FetchError> {
    let stream = connect_stream_with(uri, timeout, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, "guest")
        .header(
            http::header::ACCEPT,
            "text/plain;version=0.0.4;q=1,*/*;q=0.1",
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|e| FetchError::Body(e.to_string()))
    }
    .await;
    driver.abort();
    result
}

/// A gRPC endpoint kept between scrapes; usable from concurrent scrapes.
#[derive(Debug)]
pub struct GrpcEndpoint {
    uri: ConnectUri,
    tls: Option<ClientTls>,
    channel: Mutex<Option<Channel>>,
}

impl GrpcEndpoint {
    /// Not connected until first used.
    pub fn new(uri: ConnectUri, tls: Option<ClientTls>) -> Self {
        Self {
            uri,
            tls,
            channel: Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Channel>> {
        self.channel.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn channel(&self, timeout: Duration) -> Result<Channel, FetchError> {
        if let Some(c) = self.slot().clone() {
            return Ok(c);
        }
        let c = connect_channel_with(&self.uri, timeout, self.tls.as_ref()).await?;
        *self.slot() = Some(c.clone());
        Ok(c)
    }

    fn forget(&self) {
        *self.slot() = None;
    }

    /// `GetMetrics`, within `timeout` (connect included).
    pub async fn metrics(&self, timeout: Duration) -> Result<String, FetchError> {
        let r = tokio::time::timeout(timeout, async {
            let mut client = GuestMetricsClient::new(self.channel(timeout).await?);
            let mut req = tonic::Request::new(GetMetricsRequest {});
            req.set_timeout(timeout);
            client
                .get_metrics(req)
                .await
                .map(|r| r.into_inner().text)
                .map_err(|s| FetchError::rpc("GetMetrics", s))
        })
        .await
        .unwrap_or(Err(FetchError::Timeout(timeout)));
        if r.is_err() {
            self.forget();
        }
        r
    }

    /// One `Ping` within `timeout`; returns the round-trip time of the call alone
    /// (connecting excluded).
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, FetchError> {
        let r = tokio::time::timeout(timeout, async {
            let mut client = GuestClient::new(self.channel(timeout).await?);
            let mut req = tonic::Request::new(PingRequest {});
            req.set_timeout(timeout);
            let sent = Instant::now();
            client
                .ping(req)
                .await
                .map_err(|s| FetchError::rpc("Ping", s))?;
            Ok(sent.elapsed())
        })
        .await
        .unwrap_or(Err(FetchError::Timeout(timeout)));
        if r.is_err() {
            self.forget();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn one_shot_server(response: &'static [u8]) -> ConnectUri {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(req.starts_with("GET /metrics HTTP/1.1\r\n"), "{req}");
            s.write_all(response).await.unwrap();
            let _ = s.shutdown().await;
        });
        format!("tcp://127.0.0.1:{port}").parse().unwrap()
    }

    #[tokio::test]
    async fn fetches_a_metrics_body() {
        let uri = one_shot_server(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nup 1\n\n",
        )
        .await;
        let body = http_metrics(&uri, Duration::from_secs(5), None)
            .await
            .unwrap();
        assert_eq!(body, "up 1\n\n");
    }

    #[tokio::test]
    async fn non_200_is_an_error() {
        let uri = one_shot_server(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
        let e = http_metrics(&uri, Duration::from_secs(5), None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Status(s) if s == 404), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let uri: ConnectUri = format!("tcp://127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        let e = http_metrics(&uri, Duration::from_millis(300), None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        hold.abort();
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let uri: ConnectUri = format!("tcp://127.0.0.1:{port}").parse().unwrap();
        let e = http_metrics(&uri, Duration::from_secs(2), None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Connect(_)), "{e}");
        let g = GrpcEndpoint::new(uri, None);
        assert!(g.ping(Duration::from_secs(2)).await.is_err());
        assert!(g.metrics(Duration::from_secs(2)).await.is_err());
    }
}
