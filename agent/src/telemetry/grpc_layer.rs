//! A tower layer around every gRPC service of the agent: one span per call (OpenTelemetry RPC
//! conventions: `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`), made a
//! child of the host's span when the request carries a W3C `traceparent`, plus the gRPC server
//! metrics and the Ping metrics.
//!
//! Health checks (`boxlite.v1.Guest/Ping`, `grpc.health.v1.Health/Check` and `Watch`) get a
//! span only when the caller sends a `traceparent`: a host pings every VM every few seconds,
//! and a root span per probe would be noise in the trace store and most of the agent's work
//! per Ping (OpenTelemetry's Go gRPC instrumentation filters health checks the same way). They
//! are always counted in the metrics.
//!
//! A unary gRPC response carries its status in the trailers (or, for an immediate error, in
//! the headers), so the call ends when the response body ends: the body is wrapped and the
//! span, the code and the latency are finished there. A body dropped before its end counts as
//! `Canceled` (the client went away), unless the headers already carried the status.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation;

/// The Guest service's full name, for the Ping metrics.
const GUEST_SERVICE: &str = "boxlite.v1.Guest";

/// Adds [`GrpcTelemetry`] to every service of a tonic server.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTelemetryLayer;

impl<S> Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetry { inner }
    }
}

/// The service made by [`GrpcTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct GrpcTelemetry<S> {
    inner: S,
}

/// Splits `/package.Service/Method`; anything else is `("other", "other")`.
pub fn split_path(path: &str) -> (&str, &str) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((s, m)) if !s.is_empty() && !m.is_empty() && !m.contains('/') => (s, m),
        _ => ("other", "other"),
    }
}

/// The name gRPC implementations print for a status code (Go's `codes.Code.String()`), the
/// usual value of a `code` label.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Server-side codes that mark the span as an error (OpenTelemetry RPC conventions).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    let v = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(v))
}

/// Whether `service/method` is a health check, traced only with a caller's `traceparent`.
fn is_health_check(service: &str, method: &str) -> bool {
    match service {
        GUEST_SERVICE => method == "Ping",
        "grpc.health.v1.Health" => method == "Check" || method == "Watch",
        _ => false,
    }
}

/// The span of one call, a child of `parent` when the caller sent one.
fn call_span(service: &str, method: &str, parent: Option<opentelemetry::Context>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        trace_id = Empty,
    );
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    // Log lines inside the call carry the trace id through this span field.
    use opentelemetry::trace::TraceContextExt;
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Everything needed to finish one call.
struct Call {
    /// `Span::none()` for an untraced health check.
    span: tracing::Span,
    start: Instant,
    /// The request's path (shares the request's bytes; split again at the end).
    path: http::uri::PathAndQuery,
}

impl Call {
    fn finish(self, code: Code) {
        let name = code_name(code);
        if !self.span.is_none() {
            self.span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                self.span.record("otel.status_code", "ERROR");
            }
        }
        // A method that does not exist must not create a label value per path a client sends.
        let (service, method) = if code == Code::Unimplemented {
            ("other", "other")
        } else {
            split_path(self.path.path())
        };
        let m = super::metrics();
        m.record_grpc(service, method, name, self.start.elapsed());
        if code == Code::Ok && service == GUEST_SERVICE && method == "Ping" {
            m.record_ping();
        }
    }
}

impl<S, B, RB> Service<http::Request<B>> for GrpcTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<TracedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let (service, method) = split_path(path.path());
        let parent = propagation::extract(req.headers());
        let span = if parent.is_none() && is_health_check(service, method) {
            tracing::Span::none()
        } else {
            call_span(service, method, parent)
        };
        let call = Call {
            span: span.clone(),
            start,
            path,
        };
        // The clone that was made ready is the one to call (tower's documented pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req).instrument(span);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    let header_code = status_in(resp.headers());
                    Ok(resp.map(|body| TracedBody {
                        inner: body,
                        header_code,
                        call: Some(call),
                    }))
                }
                Err(e) => {
                    call.finish(Code::Unknown);
                    Err(e)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that finishes its call's span and metrics when it ends.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        header_code: Option<Code>,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for TracedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(call) = this.call.take() {
                // A trailers-only response (an error status in the headers) may be sent
                // without its empty body ever being polled.
                call.finish(this.header_code.unwrap_or(Code::Cancelled));
            }
        }
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    if let Some(call) = this.call.take() {
                        call.finish(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.finish(Code::Unknown);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.finish(this.header_code.unwrap_or(Code::Unknown));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_paths() {
        assert_eq!(
            split_path("/boxlite.v1.Guest/Ping"),
            ("boxlite.v1.Guest", "Ping")
        );
        assert_eq!(split_path("/"), ("other", "other"));
        assert_eq!(split_path("/a/b/c"), ("other", "other"));
        assert_eq!(split_path("nope"), ("other", "other"));
    }

    #[test]
    fn names_and_error_classes_follow_the_conventions() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::DeadlineExceeded), "DeadlineExceeded");
        assert!(is_server_error(Code::Internal));
        assert!(!is_server_error(Code::InvalidArgument));
        assert!(!is_server_error(Code::Ok));
    }

    #[test]
    fn only_pings_and_health_checks_are_health_checks() {
        assert!(is_health_check("boxlite.v1.Guest", "Ping"));
        assert!(is_health_check("grpc.health.v1.Health", "Check"));
        assert!(is_health_check("grpc.health.v1.Health", "Watch"));
        assert!(!is_health_check("boxlite.v1.Guest", "Quiesce"));
        assert!(!is_health_check("boxlite.v1.Guest", "Init"));
        assert!(!is_health_check("boxlite.v1.GuestMetrics", "GetMetrics"));
        assert!(!is_health_check("other", "other"));
    }

    #[test]
    fn reads_the_status_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(status_in(&h), None);
        h.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_in(&h), Some(Code::NotFound));
    }
}
