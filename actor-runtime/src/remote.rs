//! The seams for calls that cross nodes: where a key is served ([`Location`], answered by a
//! [`Placement`](crate::Placement)), a [`Transport`] that carries a [`RemoteCall`] to another
//! node, and the [`Inbound`] handler that answers it there.
//!
//! Everything here is bytes: what a call means and how its payload is encoded belong to the
//! layer above (the aggregate executor); how bytes travel belongs to the transport (HTTP/2 in
//! the `cluster` crate). Both sides only meet through these traits.

use std::time::Duration;

use async_trait::async_trait;

/// Where a key is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// On this node.
    Local,
    /// On another node, reachable at this address.
    Remote(String),
    /// Nowhere right now (its owner is moving or failed); ask again shortly.
    Unknown,
}

/// A call to a virtual actor on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCall {
    /// Which directory (e.g. the aggregate type) the key belongs to.
    pub directory: String,
    /// The actor's key.
    pub key: String,
    /// The encoded request (opaque to the runtime and the transport).
    pub payload: Vec<u8>,
    /// How long the caller still waits.
    pub timeout: Duration,
    /// How many nodes forwarded this call already; a receiver that does not serve the key
    /// refuses to forward it further past a small bound, so routes that disagree cannot loop.
    pub hops: u8,
}

/// Why a remote call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The call was not delivered (no connection could be made, or it was refused before
    /// being sent): nothing happened there.
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// The node's address.
        node: String,
        /// What failed.
        reason: String,
    },
    /// The call was sent but no answer came back (connection lost, timeout): it may have been
    /// carried out there.
    #[error("no answer from node {node}: {reason}")]
    Lost {
        /// The node's address.
        node: String,
        /// What failed.
        reason: String,
    },
}

/// Carries remote calls to other nodes.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Delivers `call` to the node at `node` and returns its answer's bytes, within
    /// `call.timeout`.
    async fn call(&self, node: &str, call: RemoteCall) -> Result<Vec<u8>, TransportError>;
}

/// Answers remote calls on the receiving node.
#[async_trait]
pub trait Inbound: Send + Sync + 'static {
    /// Handles one call and returns the encoded answer.
    async fn handle(&self, call: RemoteCall) -> Vec<u8>;
}
