//! Serves the Guest service, gRPC health and reflection on every listener until shutdown.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use guest_proto::v1::guest_server::GuestServer;
use guest_transport::{bind, ListenOptions, ListenUri};
use tonic::transport::Server;

use crate::service::GuestService;
use crate::shutdown::Shutdown;
use crate::telemetry::grpc_layer::GrpcTelemetryLayer;
use crate::telemetry::rpc::MetricsService;

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be opened.
    #[error("cannot listen on {uri}: {source}")]
    Bind {
        /// The URI.
        uri: String,
        /// What went wrong.
        source: guest_transport::TransportError,
    },
    /// Reflection descriptors could not be loaded.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Listener settings for [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: Vec<ListenUri>,
    /// vsock and tcp restrictions.
    pub listen_options: ListenOptions,
    /// Largest accepted request.
    pub max_message_bytes: usize,
    /// After shutdown, how long in-flight calls may run before their connections are closed.
    pub drain_timeout: Duration,
}

/// Binds every listener, then serves until `shutdown` fires; in-flight calls are drained for
/// at most `opts.drain_timeout`, then whatever is still open (a stream the client never
/// closes) is dropped.
pub async fn serve(
    opts: ServeOptions,
    service: GuestService,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let mut incoming = Vec::new();
    for uri in &opts.listen {
        let l = bind(uri, &opts.listen_options)
            .await
            .map_err(|source| ServeError::Bind {
                uri: uri.to_string(),
                source,
            })?;
        tracing::info!(%uri, "listening");
        incoming.push(l.into_incoming().boxed());
    }
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<GuestServer<GuestService>>()
        .await;
    // Both reflection protocols: v1, and v1alpha, which grpcurl before 1.9, grpcio-reflection
    // and grpc-go before 1.45 still speak (the messages are the same).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(guest_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let guest = GuestServer::new(service)
        .max_decoding_message_size(opts.max_message_bytes)
        .max_encoding_message_size(16 << 20);
    let signal = {
        let shutdown = shutdown.clone();
        let reporter = health_reporter.clone();
        async move {
            shutdown.wait().await;
            reporter
                .set_not_serving::<GuestServer<GuestService>>()
                .await;
            tracing::info!("shutting down: no new connections; draining in-flight calls");
        }
    };
    let served = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // A span (child of the host's traceparent) and the gRPC metrics for every call.
        .layer(GrpcTelemetryLayer)
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_resource_exhausted,
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(guest)
        .add_service(MetricsService::server())
        .serve_with_incoming_shutdown(stream::select_all(incoming), signal);
    let drain_deadline = async {
        shutdown.wait().await;
        tokio::time::sleep(opts.drain_timeout).await;
    };
    tokio::select! {
        served = served => served?,
        () = drain_deadline => tracing::warn!(
            "calls still open {}s after shutdown (a stream the client keeps open?); closing them",
            opts.drain_timeout.as_secs_f64()
        ),
    }
    Ok(())
}

/// tonic reports a request over `--max-message-bytes` as OUT_OF_RANGE; gRPC's convention (and
/// what clients retry on) is RESOURCE_EXHAUSTED. The status travels in the headers of a
/// trailers-only response, so it can be corrected here, in one place.
fn oversize_is_resource_exhausted<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let oversize = tonic::Status::from_header_map(resp.headers()).is_some_and(|st| {
        st.code() == tonic::Code::OutOfRange && st.message().contains("message length too large")
    });
    if oversize {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &'static str, message: &'static str) -> http::Response<()> {
        let mut r = http::Response::new(());
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(status));
        r.headers_mut()
            .insert("grpc-message", http::HeaderValue::from_static(message));
        r
    }

    #[test]
    fn only_the_oversize_out_of_range_becomes_resource_exhausted() {
        let r = oversize_is_resource_exhausted(response(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%207000%20bytes",
        ));
        assert_eq!(r.headers()["grpc-status"], "8");
        let r = oversize_is_resource_exhausted(response("11", "other"));
        assert_eq!(r.headers()["grpc-status"], "11");
        let r = oversize_is_resource_exhausted(response("0", "message length too large"));
        assert_eq!(r.headers()["grpc-status"], "0");
    }
}
