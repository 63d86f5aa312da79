//! W3C trace context from gRPC metadata: a `traceparent` (and `tracestate`) header sent by the
//! host makes the agent's spans children of the host's span, so one trace shows a snapshot from
//! the host's call down to each filesystem in the guest.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// Reads headers of an HTTP/2 request (gRPC metadata is HTTP headers).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes headers (used by tests and clients that want to send a trace context).
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The remote parent carried by `headers`, if they hold a valid `traceparent`.
pub fn extract(headers: &http::HeaderMap) -> Option<Context> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Writes `span`'s `traceparent`/`tracestate` into `headers`.
pub fn inject(span: &SpanContext, headers: &mut http::HeaderMap) {
    let cx = Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn extracts_a_valid_traceparent() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract(&h).unwrap();
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(sc.is_remote() && sc.is_sampled());
    }

    #[test]
    fn ignores_missing_or_malformed_headers() {
        assert!(extract(&http::HeaderMap::new()).is_none());
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", "00-zz-00f067aa0ba902b7-01".parse().unwrap());
        assert!(extract(&h).is_none());
        h.insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert!(extract(&h).is_none());
    }

    #[test]
    fn inject_then_extract_round_trips() {
        let sc = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let mut h = http::HeaderMap::new();
        inject(&sc, &mut h);
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        let back = extract(&h).unwrap();
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
    }
}
