//! Joining an [`Executor`] to a [`ClusterNode`]: the three pieces that make its aggregates
//! cluster-wide, wired in one place.
//!
//! - **Fenced appends**: the executor writes through a [`FencedEventStore`] carrying this node's
//!   shard epochs, so a shard taken over elsewhere refuses this node's appends.
//! - **Placement and forwarding**: every aggregate type's runtime serves only the ids of shards
//!   owned here ([`ClusterNode::placement`]) and forwards the others through the transport.
//! - **Handoff**: a shard leaving the node is drained and its actors passivated, their
//!   snapshots written, before its ownership is released; a node that fences itself stops every
//!   actor.
//!
//! Aggregate types are registered on the returned builder with
//! [`register_remote`](ExecutorBuilder::register_remote) (commands and domain errors
//! `Serialize + DeserializeOwned`) so that calls for them can travel to their owner; a type
//! registered with plain `register` is served only where its shard is owned and refused
//! elsewhere.

use std::sync::Arc;

use aggregate_actors::actor_runtime::Transport;
use aggregate_actors::event_stores::{EventStore, SnapshotStore};
use aggregate_actors::{Executor, ExecutorBuilder};
use async_trait::async_trait;

use crate::fenced_store::FencedEventStore;
use crate::handoff::ShardHandoff;
use crate::node::ClusterNode;

impl ClusterNode {
    /// An executor builder whose appends are fenced by this node's shard ownership, whose
    /// placement is this node's shard map and whose forwarded calls travel through
    /// `transport`. Register the aggregate types, build, then [`attach`](Self::attach) the
    /// executor so shards leave this node gracefully.
    pub fn executor_builder(
        &self,
        events: Arc<dyn EventStore>,
        snapshots: Arc<dyn SnapshotStore>,
        transport: Arc<dyn Transport>,
    ) -> ExecutorBuilder {
        let fenced: Arc<dyn EventStore> = Arc::new(FencedEventStore::new(
            events,
            self.node_id(),
            Arc::clone(self.owned()),
        ));
        let node = self.clone();
        Executor::builder(fenced, snapshots)
            .placement(Arc::new(move |aggregate_type| {
                Arc::new(node.placement(aggregate_type))
            }))
            .transport(transport)
    }

    /// Makes `executor` the layer that drains and passivates the actors of shards leaving this
    /// node (their snapshots are written before the shard is released, so the next owner
    /// replays only what follows them).
    pub async fn attach(&self, executor: &Executor) {
        self.set_handoff(Arc::new(ExecutorHandoff {
            executor: executor.clone(),
            shard_count: self.config().shard_count,
        }))
        .await;
    }
}

/// Passivates the actors of shards leaving the node.
struct ExecutorHandoff {
    executor: Executor,
    shard_count: u32,
}

#[async_trait]
impl ShardHandoff for ExecutorHandoff {
    async fn release(&self, shard: u32) {
        let count = self.shard_count;
        self.executor
            .passivate_matching(|aggregate_type, id| {
                crate::shard_of(aggregate_type, id, count) == shard
            })
            .await;
    }

    async fn lost(&self, shards: &[u32]) {
        // One pass over the live actors for all of them, however many were lost at once.
        let count = self.shard_count;
        let shards: std::collections::HashSet<u32> = shards.iter().copied().collect();
        self.executor
            .passivate_matching(|aggregate_type, id| {
                shards.contains(&crate::shard_of(aggregate_type, id, count))
            })
            .await;
    }

    async fn fenced(&self) {
        // Their appends are refused already; stopping them frees memory and connections.
        self.executor.passivate_matching(|_, _| true).await;
    }
}
