//! W3C trace context for every request: the caller's `traceparent` header (a new trace when it
//! sends none or a malformed one, as the specification asks), a `request` span carrying its
//! trace id that the executor's `execute` span and the stores' spans hang below, the same
//! `traceparent` on the response, and, through [`RequestTrace`], on every event a command
//! request stores.

use std::time::Instant;

use aggregate_actors::event_stores::TraceParent;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header, in and out.
pub const TRACEPARENT: &str = "traceparent";

/// The trace context of the request being served (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTrace(pub TraceParent);

/// Middleware: reads or starts the trace, runs the request in its span, logs it, and answers
/// with its `traceparent`.
pub async fn trace_requests(mut request: Request, next: Next) -> Response {
    let trace = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<TraceParent>().ok())
        .unwrap_or_else(TraceParent::generate);
    request.extensions_mut().insert(RequestTrace(trace));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        "request",
        %method,
        path,
        trace_id = %trace.trace_id_hex()
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1_000.0;
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), elapsed_ms, "request");
    });
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}
