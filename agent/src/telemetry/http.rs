//! `GET /metrics` over HTTP/1.1 on any listener of `guest_transport` (vsock in a guest, tcp or
//! unix for development), so the host scrapes the guest directly with Prometheus or through its
//! VMM's vsock socket.
//!
//! Each connection is served on its own task, and rendering only reads snapshots, so a scrape
//! never waits for a freeze in progress. The agent never writes files here.

use std::convert::Infallible;
use std::time::Duration;

use futures::StreamExt;
use guest_transport::{bind, ListenOptions, ListenUri};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::exposition::{Exposition, CONTENT_TYPE};
use crate::shutdown::Shutdown;

/// A connection that sends no complete request within this time is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsHttpError {
    /// The listener could not be opened.
    #[error("cannot listen for /metrics on {uri}: {source}")]
    Bind {
        /// The URI.
        uri: String,
        /// What went wrong.
        source: guest_transport::TransportError,
    },
}

/// Answers one request: the exposition on `GET /metrics`, 404 elsewhere, 405 for other methods.
pub fn respond(expo: &Exposition, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status, body: String| {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "guest-agent: metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    match expo.render() {
        Ok(body) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Binds `uri` and returns the address actually bound (a tcp port 0 becomes the chosen port)
/// and the task serving it until `shutdown` fires.
pub async fn serve(
    uri: &ListenUri,
    opts: &ListenOptions,
    expo: Exposition,
    shutdown: Shutdown,
) -> Result<(ListenUri, tokio::task::JoinHandle<()>), MetricsHttpError> {
    let listener = bind(uri, opts)
        .await
        .map_err(|source| MetricsHttpError::Bind {
            uri: uri.to_string(),
            source,
        })?;
    let local = listener.local_uri();
    tracing::info!(uri = %local, "serving /metrics");
    let task = tokio::spawn(async move {
        let mut incoming = listener.into_incoming();
        loop {
            let conn = tokio::select! {
                _ = shutdown.wait() => break,
                c = incoming.next() => c,
            };
            let conn = match conn {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "/metrics listener failed");
                    break;
                }
                None => break,
            };
            let expo = expo.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let resp = respond(&expo, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                let conn = builder.serve_connection(TokioIo::new(conn), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r {
                        tracing::debug!(error = %e, "/metrics connection ended with an error");
                    },
                    _ = shutdown.wait() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    });
    Ok((local, task))
}
