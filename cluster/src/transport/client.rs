//! The calling side: [`HttpTransport`], an HTTP/2 (h2c) client with one multiplexed
//! connection per peer.

use std::{
    error::Error as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actor_runtime::{RemoteCall, Transport, TransportError, async_trait};
use reqwest::header;

use super::{CALL_PATH, OCTET_STREAM, encode_call};

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
