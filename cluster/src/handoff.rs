//! [`ShardHandoff`]: what the node asks of the layer that runs actors. Its own module because
//! both the node (lost shards, self-fencing) and its releases call it, and neither may import
//! the other for it.

use async_trait::async_trait;

/// What the node asks of the layer that runs actors when shards leave it.
#[async_trait]
pub trait ShardHandoff: Send + Sync + 'static {
    /// `shard` is being released: no new calls are routed to it here any more. Finish what is
    /// queued and passivate its actors (with their snapshots); the shard's owner is cleared
    /// when this returns.
    async fn release(&self, shard: u32);

    /// The node could not heartbeat in time and serves nothing any more: stop every actor now
    /// (their appends would be fenced anyway).
    async fn fenced(&self);
}
