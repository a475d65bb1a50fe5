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

    /// `shards` were taken over by other nodes while this node was not looking (a missed
    /// takeover): they serve nothing here any more, and their actors must stop before any of
    /// them could be granted here again. By default, [`release`](Self::release) of each in turn.
    async fn lost(&self, shards: &[u32]) {
        for &shard in shards {
            self.release(shard).await;
        }
    }

    /// The node could not heartbeat in time and serves nothing any more: stop every actor now
    /// (their appends would be fenced anyway).
    async fn fenced(&self);
}
