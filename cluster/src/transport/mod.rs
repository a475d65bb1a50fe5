//! The HTTP/2 transport between cluster nodes: [`HttpTransport`] carries a
//! [`RemoteCall`] to another node, [`serve`] answers them there through an [`Inbound`](actor_runtime::Inbound).
//!
//! # Wire format
//!
//! One call is one `POST http://{node}/v1/call` over HTTP/2 with prior knowledge on plain TCP
//! (h2c, no TLS, no upgrade round trip). The request body is the whole [`RemoteCall`] encoded
//! with MessagePack (`rmp-serde`, as a map with the fields `directory`, `key`, `payload` as
//! MessagePack `bin`, `timeout_ms` and `hops`); the answer is `200` with the [`Inbound`](actor_runtime::Inbound)'s
//! bytes as `application/octet-stream`. A body that does not decode is answered `400` with a
//! short text.
//!
//! # Connections
//!
//! An [`HttpTransport`] holds one client: every call to the same node multiplexes over one
//! HTTP/2 connection (opened on first use, kept while in use; only a burst of first calls
//! racing to a node with no connection yet may open a second one), and HTTP/2 pings on it
//! (also while idle) notice a dead peer, which closes the connection so the next call
//! connects anew.
//!
//! # Errors
//!
//! A call fails with [`TransportError::Unreachable`](actor_runtime::TransportError::Unreachable) only when it certainly was not delivered:
//! the address is not usable, or no connection could be made (refused, connect timeout). Every
//! failure after that, where the request may have been sent (the call's own timeout, a reset
//! or lost connection, a protocol error, a status other than `200`), is
//! [`TransportError::Lost`](actor_runtime::TransportError::Lost): the call may have been carried out there. When the call's timeout
//! elapses while the connection is still being made, the call is reported `Lost` too: the
//! client cannot tell that phase apart, and `Lost` is the answer that is never wrong.
//!
//! An [`Executor`](aggregate_actors::Executor) that forwards through this transport hands the
//! distinction on to its callers in the [`ExecutorError::Remote`](aggregate_actors::ExecutorError::Remote) it returns:
//!
//! | the call | the caller's error |
//! |---|---|
//! | `Unreachable` (or refused unread by a node that does not serve the aggregate) | [`not_delivered`](aggregate_actors::ExecutorError::not_delivered): nothing happened there |
//! | `Lost`, or answered with bytes that do not decode | [`answer_lost`](aggregate_actors::ExecutorError::answer_lost): it may have been carried out there (a command is [indeterminate](aggregate_actors::CommandError::Indeterminate)) |
//! | answered `200` with the owner's error | [`owner_answered`](aggregate_actors::ExecutorError::owner_answered): the error says what happened there |
//!
//! Nothing new travels on the wire for it: the caller learns it from how its own call ended
//! and from the owner's answer as it always was, so nodes of older and newer versions agree.
//!
//! # Metrics
//!
//! Through the `metrics` facade: `cluster_forwards_total{outcome="ok|unreachable|lost"}` and
//! the histogram `cluster_forward_seconds` (every call, whatever its outcome); the same counts
//! in-process from [`HttpTransport::stats`].
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use actor_runtime::{Inbound, RemoteCall, Transport, async_trait};
//! use cluster::{HttpTransport, serve};
//!
//! struct Echo;
//! #[async_trait]
//! impl Inbound for Echo {
//!     async fn handle(&self, call: RemoteCall) -> Vec<u8> {
//!         call.payload
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7001").await?;
//! let server = serve(listener, Arc::new(Echo));
//! let transport = HttpTransport::new()?;
//! let call = RemoteCall {
//!     directory: "account".into(),
//!     key: "42".into(),
//!     payload: b"hello".to_vec(),
//!     timeout: Duration::from_secs(2),
//!     hops: 0,
//! };
//! let answer = transport.call(&server.local_addr().to_string(), call).await?;
//! assert_eq!(answer, b"hello");
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod client;
mod server;

use std::borrow::Cow;
use std::time::Duration;

use actor_runtime::RemoteCall;
use serde::{Deserialize, Serialize};

pub use client::{HttpTransport, HttpTransportConfig, TransportBuildError, TransportStats};
pub use server::{ServerConfig, ServerStats, TransportServer, serve, serve_with_config};

/// The path of the call endpoint.
pub const CALL_PATH: &str = "/v1/call";

pub(crate) const OCTET_STREAM: &str = "application/octet-stream";

/// The [`RemoteCall`] as it travels: bytes as MessagePack `bin`, the timeout in milliseconds.
#[derive(Serialize, Deserialize)]
struct WireCall<'a> {
    #[serde(borrow)]
    directory: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(with = "serde_bytes", borrow)]
    payload: Cow<'a, [u8]>,
    timeout_ms: u64,
    hops: u8,
}

/// Milliseconds, rounded up so that a timeout below a millisecond does not travel as zero.
fn millis_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Encodes a call as the request body.
pub(crate) fn encode_call(call: &RemoteCall) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(&WireCall {
        directory: Cow::Borrowed(&call.directory),
        key: Cow::Borrowed(&call.key),
        payload: Cow::Borrowed(&call.payload),
        timeout_ms: millis_ceil(call.timeout),
        hops: call.hops,
    })
}

/// Decodes a request body.
pub(crate) fn decode_call(body: &[u8]) -> Result<RemoteCall, rmp_serde::decode::Error> {
    let wire: WireCall<'_> = rmp_serde::from_slice(body)?;
    Ok(RemoteCall {
        directory: wire.directory.into_owned(),
        key: wire.key.into_owned(),
        payload: wire.payload.into_owned(),
        timeout: Duration::from_millis(wire.timeout_ms),
        hops: wire.hops,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_bytes_are_bin() {
        let call = RemoteCall {
            directory: "account".into(),
            key: "a b ü".into(),
            payload: vec![7; 300],
            timeout: Duration::from_millis(1500),
            hops: 2,
        };
        let body = encode_call(&call).unwrap();
        // 300 bytes as `bin` cost 3 bytes of header, as an array of ints at least 300 more.
        assert!(
            body.len() < 300 + 80,
            "payload not encoded as bin: {} bytes",
            body.len()
        );
        assert_eq!(decode_call(&body).unwrap(), call);
    }

    #[test]
    fn sub_millisecond_timeout_rounds_up() {
        assert_eq!(millis_ceil(Duration::from_micros(10)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(5)), 5);
        assert_eq!(millis_ceil(Duration::MAX), u64::MAX);
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(decode_call(b"\xc1 not msgpack").is_err());
        assert!(decode_call(b"").is_err());
    }
}
