//! The HTTP/2 transport between cluster nodes: [`HttpTransport`] carries a
//! [`RemoteCall`] to another node, [`serve`] answers them there through an [`Inbound`].
//!
//! # Wire format
//!
//! One call is one `POST http://{node}/v1/call` over HTTP/2 with prior knowledge on plain TCP
//! (h2c, no TLS, no upgrade round trip). The request body is the whole [`RemoteCall`] encoded
//! with MessagePack (`rmp-serde`, as a map with the fields `directory`, `key`, `payload` as
//! MessagePack `bin`, `timeout_ms` and `hops`); the answer is `200` with the [`Inbound`]'s
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
//! A call fails with [`TransportError::Unreachable`] only when it certainly was not delivered:
//! the address is not usable, or no connection could be made (refused, connect timeout). Every
//! failure after that, where the request may have been sent (the call's own timeout, a reset
//! or lost connection, a protocol error, a status other than `200`), is
//! [`TransportError::Lost`]: the call may have been carried out there. When the call's timeout
//! elapses while the connection is still being made, the call is reported `Lost` too: the
//! client cannot tell that phase apart, and `Lost` is the answer that is never wrong.
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

use std::{
    borrow::Cow,
    error::Error as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actor_runtime::{Inbound, RemoteCall, Transport, TransportError, async_trait};
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, Version, header},
    response::{IntoResponse, Response},
    routing::post,
    serve::ListenerExt,
};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The path of the call endpoint.
pub const CALL_PATH: &str = "/v1/call";

const OCTET_STREAM: &str = "application/octet-stream";

// ---------------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------------

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
fn encode_call(call: &RemoteCall) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(&WireCall {
        directory: Cow::Borrowed(&call.directory),
        key: Cow::Borrowed(&call.key),
        payload: Cow::Borrowed(&call.payload),
        timeout_ms: millis_ceil(call.timeout),
        hops: call.hops,
    })
}

/// Decodes a request body.
fn decode_call(body: &[u8]) -> Result<RemoteCall, rmp_serde::decode::Error> {
    let wire: WireCall<'_> = rmp_serde::from_slice(body)?;
    Ok(RemoteCall {
        directory: wire.directory.into_owned(),
        key: wire.key.into_owned(),
        payload: wire.payload.into_owned(),
        timeout: Duration::from_millis(wire.timeout_ms),
        hops: wire.hops,
    })
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Settings of an [`HttpTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpTransportConfig {
    /// How long making a TCP connection to a node may take before the call is
    /// [`Unreachable`](TransportError::Unreachable). Default 1 s.
    pub connect_timeout: Duration,
    /// How often an HTTP/2 ping is sent on each connection, also while it is idle.
    /// Default 5 s.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed as dead (calls in
    /// flight on it are then [`Lost`](TransportError::Lost)). Default 5 s.
    pub keep_alive_timeout: Duration,
    /// How long an idle connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
}

impl Default for HttpTransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keep_alive_interval: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

impl HttpTransportConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`keep_alive_interval`](Self::keep_alive_interval) and
    /// [`keep_alive_timeout`](Self::keep_alive_timeout).
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = interval;
        self.keep_alive_timeout = timeout;
        self
    }

    /// Sets [`pool_idle_timeout`](Self::pool_idle_timeout).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }
}

/// The client could not be built (e.g. the TLS or DNS back end failed to initialise).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP/2 client: {0}")]
pub struct TransportBuildError(#[source] reqwest::Error);

/// Counts of the calls made through an [`HttpTransport`] since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Calls answered.
    pub ok: u64,
    /// Calls that failed with [`TransportError::Unreachable`].
    pub unreachable: u64,
    /// Calls that failed with [`TransportError::Lost`].
    pub lost: u64,
}

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    unreachable: AtomicU64,
    lost: AtomicU64,
}

/// A [`Transport`] over HTTP/2 (h2c with prior knowledge) with one shared client: calls to
/// the same node multiplex over one connection. Cheap to clone; clones share the client, its
/// connections and the counts.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    counters: Arc<Counters>,
}

impl HttpTransport {
    /// A transport with the default [`HttpTransportConfig`].
    pub fn new() -> Result<Self, TransportBuildError> {
        Self::with_config(&HttpTransportConfig::default())
    }

    /// A transport with these settings.
    pub fn with_config(config: &HttpTransportConfig) -> Result<Self, TransportBuildError> {
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .http2_keep_alive_interval(config.keep_alive_interval)
            .http2_keep_alive_timeout(config.keep_alive_timeout)
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(config.pool_idle_timeout)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(TransportBuildError)?;
        Ok(Self {
            client,
            counters: Arc::default(),
        })
    }

    /// The counts of calls by outcome since this transport was made.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            ok: self.counters.ok.load(Ordering::Relaxed),
            unreachable: self.counters.unreachable.load(Ordering::Relaxed),
            lost: self.counters.lost.load(Ordering::Relaxed),
        }
    }

    async fn send(&self, node: &str, call: &RemoteCall) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            node: node.to_owned(),
            reason,
        };
        let lost = |reason: String| TransportError::Lost {
            node: node.to_owned(),
            reason,
        };
        if call.timeout.is_zero() {
            return Err(unreachable(
                "the call's timeout had elapsed before sending".into(),
            ));
        }
        let body =
            encode_call(call).map_err(|e| unreachable(format!("cannot encode the call: {e}")))?;
        let url = format!("http://{node}{CALL_PATH}");
        let response = self
            .client
            .post(url)
            .header(header::CONTENT_TYPE, OCTET_STREAM)
            .timeout(call.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(e, node))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            return Err(lost(format!("answered {status}: {text}")));
        }
        let answer = response.bytes().await.map_err(|e| {
            lost(format!(
                "reading the answer failed ({}): {}",
                if e.is_timeout() { "timeout" } else { "body" },
                chain(&e)
            ))
        })?;
        Ok(answer.into())
    }
}

/// Maps a failed request to [`TransportError`]: `Unreachable` only when the request was
/// certainly not sent.
fn classify(error: reqwest::Error, node: &str) -> TransportError {
    let reason = chain(&error);
    // `is_connect` marks failures of the connector (refused, connect timeout, DNS): no byte
    // of the request went out. `is_builder` is a request that could not even be built (an
    // address that makes no URL). Checked before `is_timeout`, which a connect timeout also is.
    if error.is_connect() || error.is_builder() {
        TransportError::Unreachable {
            node: node.to_owned(),
            reason,
        }
    } else {
        let what = if error.is_timeout() {
            "timeout"
        } else {
            "request"
        };
        TransportError::Lost {
            node: node.to_owned(),
            reason: format!("{what}: {reason}"),
        }
    }
}

/// The error and its sources on one line.
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Transport for HttpTransport {
    async fn call(&self, node: &str, call: RemoteCall) -> Result<Vec<u8>, TransportError> {
        let started = Instant::now();
        let result = self.send(node, &call).await;
        let (outcome, counter) = match &result {
            Ok(_) => ("ok", &self.counters.ok),
            Err(TransportError::Unreachable { .. }) => ("unreachable", &self.counters.unreachable),
            Err(TransportError::Lost { .. }) => ("lost", &self.counters.lost),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cluster_forwards_total", "outcome" => outcome).increment(1);
        metrics::histogram!("cluster_forward_seconds").record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::debug!(node, directory = %call.directory, error = %e, "remote call failed");
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Settings of a [`TransportServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The largest request body accepted; a larger one is answered `413`. Default 64 MiB.
    pub max_body_bytes: usize,
    /// How long [`TransportServer::shutdown`] waits for calls in flight before it stops
    /// waiting. Default 10 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_body_bytes`](Self::max_body_bytes).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets [`shutdown_grace`](Self::shutdown_grace).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

/// Counts of what a [`TransportServer`] received since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Calls received over HTTP/2.
    pub http2_calls: u64,
    /// Calls received over another HTTP version.
    pub other_calls: u64,
    /// Calls answered `200`.
    pub answered: u64,
    /// Request bodies that did not decode (answered `400`).
    pub malformed: u64,
    /// Calls whose [`Inbound`] panicked (answered `500`).
    pub failed: u64,
}

#[derive(Debug, Default)]
struct ServerCounters {
    connections: AtomicU64,
    http2_calls: AtomicU64,
    other_calls: AtomicU64,
    answered: AtomicU64,
    malformed: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone)]
struct ServerState {
    inbound: Arc<dyn Inbound>,
    counters: Arc<ServerCounters>,
}

/// A running server of remote calls, from [`serve`]. Stops on [`shutdown`](Self::shutdown),
/// or when dropped (then it stops accepting at once and closes its connections after the
/// calls in flight on them).
#[must_use = "the server stops when dropped"]
pub struct TransportServer {
    local_addr: SocketAddr,
    counters: Arc<ServerCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    grace: Duration,
}

impl std::fmt::Debug for TransportServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportServer")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TransportServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What it received since it started.
    pub fn stats(&self) -> ServerStats {
        let c = &self.counters;
        ServerStats {
            connections: c.connections.load(Ordering::Relaxed),
            http2_calls: c.http2_calls.load(Ordering::Relaxed),
            other_calls: c.other_calls.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops gracefully: stops accepting (the listener is closed), tells every connection to
    /// go away (HTTP/2 `GOAWAY`), and waits up to [`ServerConfig::shutdown_grace`] for the
    /// calls in flight to be answered and the connections to close. Returns once the
    /// listener is closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(self.grace, &mut task).await.is_err()
        {
            tracing::warn!(
                addr = %self.local_addr,
                "calls still in flight after the shutdown grace period; not waiting for them"
            );
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TransportServer {
    fn drop(&mut self) {
        // Dropping the sender ends the shutdown signal: connections are told to go away.
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves remote calls on `listener` with `inbound`, with the default [`ServerConfig`].
///
/// Speaks HTTP/2 with prior knowledge (what [`HttpTransport`] sends) and HTTP/1.1, on the
/// current Tokio runtime.
pub fn serve(listener: TcpListener, inbound: Arc<dyn Inbound>) -> TransportServer {
    serve_with_config(listener, inbound, &ServerConfig::default())
}

/// Serves remote calls on `listener` with `inbound` and these settings.
///
/// # Panics
///
/// When called outside a Tokio runtime.
pub fn serve_with_config(
    listener: TcpListener,
    inbound: Arc<dyn Inbound>,
    config: &ServerConfig,
) -> TransportServer {
    let counters = Arc::new(ServerCounters::default());
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let state = ServerState {
        inbound,
        counters: counters.clone(),
    };
    let app = Router::new()
        .route(CALL_PATH, post(handle_call))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);
    let accepted = counters.clone();
    let listener = listener.tap_io(move |io| {
        accepted.connections.fetch_add(1, Ordering::Relaxed);
        let _ = io.set_nodelay(true);
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // Either a shutdown or the server's drop.
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(addr = %local_addr, error = %e, "transport server failed");
        }
    });
    TransportServer {
        local_addr,
        counters,
        stop: Some(stop),
        task: Some(task),
        grace: config.shutdown_grace,
    }
}

async fn handle_call(State(state): State<ServerState>, version: Version, body: Bytes) -> Response {
    let counters = &state.counters;
    if version == Version::HTTP_2 {
        counters.http2_calls.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.other_calls.fetch_add(1, Ordering::Relaxed);
    }
    let call = match decode_call(&body) {
        Ok(call) => call,
        Err(e) => {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::BAD_REQUEST,
                format!("malformed remote call: {e}"),
            )
                .into_response();
        }
    };
    // Its own task: the call runs to its end even when the caller goes away (it was
    // delivered, so it may be carried out either way), and a panic in it fails this call only.
    let inbound = state.inbound.clone();
    match tokio::spawn(async move { inbound.handle(call).await }).await {
        Ok(answer) => {
            counters.answered.fetch_add(1, Ordering::Relaxed);
            ([(header::CONTENT_TYPE, OCTET_STREAM)], answer).into_response()
        }
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "inbound call handler failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the call's handler failed",
            )
                .into_response()
        }
    }
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
