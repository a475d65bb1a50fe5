//! Running aggregates on several nodes: membership, shard ownership and fencing tokens in
//! PostgreSQL, and the runtime placement they give.
//!
//! No consensus of its own: PostgreSQL (which the event store needs anyway) holds the state,
//! the way Orleans keeps its membership table in SQL.
//!
//! - **Members** ([`membership`]): a row per node process with a fresh node id, alive while its
//!   heartbeat, written on the database clock, is younger than the TTL.
//! - **Shards** ([`shard`]): an aggregate's shard is a stable hash of (type, id) modulo a fixed
//!   count; each shard's preferred owner is chosen by rendezvous hashing over the live members,
//!   so every node computes the same map and a join moves only the joiner's share.
//! - **Ownership** ([`ownership`]): a row per shard with its owner and an epoch, claimed by a
//!   conditional `UPDATE` (nobody or a dead node → me, epoch + 1) and released after the
//!   shard's actors were drained and passivated.
//! - **Fencing** ([`FencedEventStore`]): every append carries (shard, owner, epoch) and the
//!   PostgreSQL append checks it under a share lock of the ownership row, so a node that lost a
//!   shard cannot write to it, and a takeover waits for appends in flight (a claim skips a row
//!   held so, and the next tick tries it again). A command whose append was fenced stored
//!   nothing: the executor takes it on to the shard's owner within its deadline.
//! - **Self-fencing** ([`ClusterNode`]): a node that cannot heartbeat for the TTL minus a
//!   margin stops serving before anyone may take its shards; every statement of its
//!   bookkeeping is bounded on the client, so a server that answers nothing cannot hold it.
//! - **Placement** ([`ClusterPlacement`]): the runtime serves only the keys of shards owned
//!   here and locates the others on their owners through the route table.
//! - **Executor** ([`ClusterNode::executor_builder`], [`ClusterNode::attach`]): an
//!   [`Executor`](aggregate_actors::Executor) whose appends are fenced, whose placement is the
//!   shard map and whose shards leave through a drain and a passivation snapshot.
//! - **Transport** ([`HttpTransport`], [`serve`]): forwarded calls travel as one MessagePack
//!   body per HTTP/2 request (h2c, prior knowledge, multiplexed over one connection per peer);
//!   a call that could not be delivered is `Unreachable` (safe to retry), one whose answer was
//!   lost is `Lost` (its outcome is unknown, so commands carry their id).
//!
//! Metrics (through the `metrics` facade, per node): `cluster_shards_owned`, `cluster_members`,
//! `cluster_shard_claims_total`, `cluster_shard_releases_total`, `cluster_self_fences_total`,
//! `cluster_heartbeat_failures_total`, `cluster_heartbeat_seconds` (heartbeat round trip, the
//! lag a node's liveness runs behind), `cluster_fenced_appends_total`, and the transport's
//! `cluster_forwards_total{outcome}` and `cluster_forward_seconds`; [`ClusterNode::stats`] and
//! [`HttpTransport::stats`] give the same in process.
//!
//! ```no_run
//! use std::sync::Arc;
//! use aggregate_actors::AggregateSettings;
//! use aggregate_actors::event_stores::{PgConfig, PgEventStore, PgSnapshotStore};
//! use cluster::{ClusterConfig, ClusterNode, HttpTransport};
//! # use aggregate_actors::{Aggregate, Context};
//! # use serde::{Deserialize, Serialize};
//! # struct Account;
//! # #[derive(Debug, Serialize, Deserialize)] struct Deposited(u64);
//! # #[derive(Debug, Serialize, Deserialize, thiserror::Error)] #[error("never")] struct Never;
//! # impl Aggregate for Account {
//! #     const TYPE: &'static str = "account";
//! #     type Command = u64; type Event = Deposited; type State = u64; type Error = Never;
//! #     fn decide(_: &u64, c: &u64, _ctx: &mut Context<'_, Self>) -> Result<Vec<Deposited>, Never> { Ok(vec![Deposited(*c)]) }
//! #     fn apply(s: &mut u64, e: &Deposited) { *s += e.0 }
//! # }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PgConfig::new("postgres://app@db/app");
//! let events = PgEventStore::connect(&config).await?;
//! let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), config.limits)
//!     .with_client_timeout(config.client_timeout());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:7001").await?;
//!
//! // Join: a fresh node id, a heartbeat, and the shards rendezvous hashing gives this node.
//! let node = ClusterNode::start(events.pool().clone(), ClusterConfig::new("10.0.0.5:7001")).await?;
//! // Appends fenced by shard epochs; calls for shards owned elsewhere forwarded over HTTP/2.
//! let executor = node
//!     .executor_builder(Arc::new(events), Arc::new(snapshots), Arc::new(HttpTransport::new()?))
//!     .register_remote::<Account>(AggregateSettings::new())
//!     .build()?;
//! node.attach(&executor).await; // shards leave through a drain and a passivation snapshot
//! let server = cluster::serve(listener, executor.inbound()); // answer the other nodes
//!
//! // Any node takes any id: served here or forwarded to its owner.
//! executor.execute::<Account>("acc-42", 5).await?;
//!
//! node.leave().await?; // hand every shard over, then stop
//! executor.shutdown().await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod error;
mod executor;
mod fenced_store;
mod handoff;
pub mod membership;
mod node;
mod owned;
pub mod ownership;
mod placement;
mod release;
mod round_trip;
mod routes;
pub mod schema;
pub mod shard;
pub mod transport;

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use fenced_store::FencedEventStore;
pub use handoff::ShardHandoff;
pub use node::{ClusterNode, ClusterStats, Route};
pub use owned::OwnedShards;
pub use placement::ClusterPlacement;
pub use routes::RouteTable;
pub use shard::{DEFAULT_SHARD_COUNT, preferred_owner, shard_of};
pub use transport::{
    CALL_PATH, HttpTransport, HttpTransportConfig, ServerConfig, ServerStats, TransportBuildError,
    TransportServer, TransportStats, serve, serve_with_config,
};
