//! The answering side: [`serve`] runs an axum HTTP/2 server that hands each call to an
//! [`Inbound`].

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use actor_runtime::Inbound;
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, Version, header},
    response::{IntoResponse, Response},
    routing::post,
    serve::ListenerExt,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::{CALL_PATH, OCTET_STREAM, decode_call};

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
/// Speaks HTTP/2 with prior knowledge (what [`HttpTransport`](super::HttpTransport) sends) and HTTP/1.1, on the
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
