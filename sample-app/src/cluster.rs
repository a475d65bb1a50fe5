//! Cluster mode of `serve`: several processes on one PostgreSQL database share the aggregates.
//!
//! Each process joins as a node of the `cluster` crate: a row in
//! `cluster_members` with a heartbeat, the shards rendezvous hashing gives it in
//! `shard_owners`, appends fenced by the shard epochs, and a node-to-node HTTP/2 listener that
//! answers the calls other nodes forward. Any node takes any request: a command for an
//! aggregate whose shard another node owns travels there (with its command id and deadline)
//! and its answer comes back. When a node dies, the others claim its shards once its heartbeat
//! is older than the TTL (3 s), and the calls waiting for those aggregates go on there.
//!
//! The wiring is the crate's own recipe ([`Member::join`]): `ClusterNode::start` on the stores'
//! pool, `executor_builder` with an [`HttpTransport`], the hosted aggregates registered with
//! `register_remote` ([`ledger::host`]), `attach`, then `cluster::serve` on the cluster
//! listener. [`Member::leave`] hands every shard over before the process stops.

use std::net::SocketAddr;
use std::sync::Arc;

use ::cluster::{
    ClusterConfig, ClusterError, ClusterNode, HttpTransport, TransportBuildError, TransportServer,
};
use aggregate_actors::scheduler::ShardFilter;
use aggregate_actors::{BuildError, Executor};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::ReviewPolicy;
use crate::ledger::{self, Reach, Stores};

/// How a `serve` process joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the node-to-node listener binds; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The address other nodes reach the listener at (`host:port`); the bound address when
    /// `None`.
    pub advertise: Option<String>,
    /// Most shards handed over to other nodes per heartbeat when nodes join.
    pub max_releases_per_tick: usize,
}

impl ClusterOptions {
    /// Loopback on a free port, advertised as bound, the crate's default hand-over pace.
    pub fn new() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            max_releases_per_tick: ClusterConfig::new("").max_releases_per_tick,
        }
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the process could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Cluster mode keeps membership and ownership in PostgreSQL: in-memory stores cannot
    /// be shared.
    #[error("cluster mode needs PostgreSQL: give --database-url or set DATABASE_URL")]
    NeedsDatabase,
    /// The node-to-node listener could not be bound.
    #[error("cannot listen for other nodes on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The listener binds every interface, so its address says nothing about how to reach it.
    #[error(
        "--cluster-listen {bound} binds every interface: give --advertise (or LEDGER_ADVERTISE) \
         with the address other nodes reach this one at"
    )]
    AdvertiseNeeded {
        /// The bound address.
        bound: SocketAddr,
    },
    /// `--advertise` is not `host:port`.
    #[error("--advertise {0:?} is not host:port")]
    BadAdvertise(String),
    /// Joining failed (the database, or settings that disagree with the cluster's).
    #[error("cannot join the cluster: {0}")]
    Node(#[from] ClusterError),
    /// The node-to-node client could not be built.
    #[error(transparent)]
    Transport(#[from] TransportBuildError),
    /// The executor could not be built.
    #[error("cannot build the executor: {0}")]
    Build(#[from] BuildError),
}

/// This process as a member of the cluster: its node, the transport its executor forwards
/// through, and the server answering the other nodes.
pub struct Member {
    node: ClusterNode,
    server: TransportServer,
    status: ClusterStatus,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("node_id", &self.node.node_id())
            .field("advertised", &self.status.advertised)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// Joins the cluster on the stores' database and builds the executor the service runs:
    /// binds the node-to-node listener, starts the node (fresh node id, heartbeat, the shards
    /// it should own), builds a fenced, forwarding executor with the hosted aggregates, makes
    /// it the node's handoff and starts answering the other nodes.
    pub async fn join(
        stores: &Stores,
        options: &ClusterOptions,
        reviews: ReviewPolicy,
    ) -> Result<(Self, Executor), JoinError> {
        let pool = stores.pool.clone().ok_or(JoinError::NeedsDatabase)?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| JoinError::Listen {
                address: options.listen,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| JoinError::Listen {
            address: options.listen,
            source,
        })?;
        let advertised = advertised(options.advertise.as_deref(), bound)?;
        let config = ClusterConfig {
            max_releases_per_tick: options.max_releases_per_tick.max(1),
            ..ClusterConfig::new(advertised.clone())
        };
        let node = ClusterNode::start(pool, config).await?;
        let transport = HttpTransport::new()?;
        let built = ledger::host(
            node.executor_builder(
                Arc::clone(&stores.events),
                Arc::clone(&stores.snapshots),
                Arc::new(transport.clone()),
            ),
            Reach::Cluster,
            // A freeze stores its review reminder with the fenced append; the node's scheduler
            // fires it ([`Member::reminder_shards`]).
            Some(reviews),
            stores.snapshot_config.as_deref(),
        )
        .build();
        let executor = match built {
            Ok(executor) => executor,
            Err(error) => {
                // Joined already: hand the shards back rather than leave them to the TTL.
                if let Err(leave) = node.leave().await {
                    tracing::warn!(error = %leave, "leaving the cluster after a failed start");
                }
                return Err(error.into());
            }
        };
        node.attach(&executor).await;
        let server = ::cluster::serve(listener, executor.inbound());
        metrics::gauge!(
            "cluster_node_info",
            "node_id" => node.node_id().to_string(),
            "address" => advertised.clone()
        )
        .set(1.0);
        tracing::info!(node = %node.node_id(), %advertised, %bound, "joined the cluster");
        let status = ClusterStatus {
            node: node.clone(),
            transport,
            advertised,
            listening: bound,
        };
        Ok((
            Self {
                node,
                server,
                status,
            },
            executor,
        ))
    }

    /// The shards whose reminders this node fires, as of each call: the scheduler's filter.
    pub fn reminder_shards(&self) -> ShardFilter {
        self.node.reminder_shards()
    }

    /// This node's id.
    pub fn node_id(&self) -> Uuid {
        self.node.node_id()
    }

    /// The address other nodes reach this one at.
    pub fn advertised(&self) -> &str {
        &self.status.advertised
    }

    /// The address the node-to-node listener is bound to.
    pub fn listening(&self) -> SocketAddr {
        self.status.listening
    }

    /// A handle for `/health` and `/metrics`.
    pub fn status(&self) -> ClusterStatus {
        self.status.clone()
    }

    /// Leaves gracefully: hands every shard over (its actors drained and passivated, their
    /// snapshots written) and marks the node gone, so the others claim its shards at their
    /// next heartbeat instead of after the TTL; then shuts the executor down and stops
    /// answering the other nodes. A failure to leave is logged: the others then take the
    /// shards over once the TTL has passed.
    pub async fn leave(self, executor: &Executor) {
        tracing::info!(node = %self.node.node_id(), "leaving the cluster");
        if let Err(error) = self.node.leave().await {
            tracing::warn!(%error, "leaving the cluster failed; the others take over after the TTL");
        }
        executor.shutdown().await;
        self.server.shutdown().await;
        tracing::info!("left the cluster");
    }
}

/// The address to advertise: `--advertise` when given (checked to be `host:port`), otherwise
/// the bound address unless it is a wildcard.
fn advertised(advertise: Option<&str>, bound: SocketAddr) -> Result<String, JoinError> {
    match advertise.map(str::trim) {
        Some(address) => {
            let valid = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if valid {
                Ok(address.to_owned())
            } else {
                Err(JoinError::BadAdvertise(address.to_owned()))
            }
        }
        None if bound.ip().is_unspecified() => Err(JoinError::AdvertiseNeeded { bound }),
        None => Ok(bound.to_string()),
    }
}

/// What `/health` shows about this node's part in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct ClusterStatus {
    node: ClusterNode,
    transport: HttpTransport,
    advertised: String,
    listening: SocketAddr,
}

impl std::fmt::Debug for ClusterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStatus")
            .field("report", &self.report())
            .finish()
    }
}

/// The node's figures as `/health` reports them (`"cluster": {…}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterReport {
    /// This process's node id (fresh for every start).
    pub node_id: Uuid,
    /// The address other nodes reach this one at.
    pub advertised: String,
    /// The address the node-to-node listener is bound to.
    pub listening: String,
    /// Shards served here now.
    pub shards_owned: usize,
    /// Live members seen at the last heartbeat, this one included.
    pub members: usize,
    /// Shards claimed since start.
    pub claims: u64,
    /// Shards handed over since start.
    pub releases: u64,
    /// Times this node stopped serving for want of a heartbeat.
    pub self_fences: u64,
    /// Heartbeats that failed.
    pub heartbeat_failures: u64,
    /// Round trip of the last successful heartbeat, in milliseconds.
    pub heartbeat_round_trip_ms: f64,
    /// Calls this node forwarded to the owners of other shards, by outcome.
    pub forwards: ForwardCounts,
}

/// Forwarded calls by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForwardCounts {
    /// Answered.
    pub ok: u64,
    /// Certainly not delivered (the owner could not be reached); retried.
    pub unreachable: u64,
    /// Delivered, but the answer was lost.
    pub lost: u64,
}

impl ClusterStatus {
    /// The node's figures now.
    pub fn report(&self) -> ClusterReport {
        let stats = self.node.stats();
        let forwards = self.transport.stats();
        ClusterReport {
            node_id: self.node.node_id(),
            advertised: self.advertised.clone(),
            listening: self.listening.to_string(),
            shards_owned: stats.shards_owned,
            members: stats.members,
            claims: stats.claims,
            releases: stats.releases,
            self_fences: stats.self_fences,
            heartbeat_failures: stats.heartbeat_failures,
            heartbeat_round_trip_ms: (stats.heartbeat_micros as f64).round() / 1_000.0,
            forwards: ForwardCounts {
                ok: forwards.ok,
                unreachable: forwards.unreachable,
                lost: forwards.lost,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_address_is_advertised_unless_it_is_a_wildcard() {
        let bound: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(advertised(None, bound).unwrap(), "127.0.0.1:7001");
        let wildcard: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        assert!(matches!(
            advertised(None, wildcard),
            Err(JoinError::AdvertiseNeeded { .. })
        ));
        assert_eq!(
            advertised(Some("node-2.internal:7001"), wildcard).unwrap(),
            "node-2.internal:7001"
        );
        assert_eq!(advertised(Some("[::1]:7001"), bound).unwrap(), "[::1]:7001");
        for bad in ["node-2", ":7001", "node-2:", "node-2:99999", ""] {
            assert!(
                matches!(
                    advertised(Some(bad), bound),
                    Err(JoinError::BadAdvertise(_))
                ),
                "{bad:?}"
            );
        }
    }
}
