//! [`Releases`]: the bookkeeping of a node's shard releases, each run in a task of its own.
//!
//! A release drains a shard, lets the [`ShardHandoff`] finish and passivate its actors, then
//! clears its owner (epoch + 1). It may take as long as those actors' queues and snapshots, so
//! the tick only starts it and leaves its shard alone until it ends. Kept apart from the node so
//! that the node reads as membership, claims and self-fencing; the node lends a release what it
//! touches through [`ReleasingNode`], so this module never imports the node.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, RwLock, Semaphore};
use uuid::Uuid;

use crate::handoff::ShardHandoff;
use crate::owned::OwnedShards;
use crate::ownership;

/// The node a release belongs to, as the release sees it. A release task holds the node itself
/// (an `Arc` of it), not just these parts, so the node lives on until its releases end.
pub(crate) trait ReleasingNode: Send + Sync + 'static {
    /// Its release bookkeeping.
    fn releases(&self) -> &Releases;
    /// Its own connections, on which a release clears the owner.
    fn pool(&self) -> &PgPool;
    /// How long a statement on [`pool`](Self::pool) may wait for its answer.
    fn answer_within(&self) -> Duration;
    /// Its node id: the owner a release clears.
    fn node_id(&self) -> Uuid;
    /// The shards it owns, which a release drains and revokes.
    fn owned(&self) -> &OwnedShards;
    /// The layer that passivates a released shard's actors, once set.
    fn handoff(&self) -> &RwLock<Option<Arc<dyn ShardHandoff>>>;
}

/// A node's releases under way, and how many it made.
pub(crate) struct Releases {
    /// Most releases under way at once (`max_releases_per_tick`); the rest wait for later ticks.
    max_under_way: usize,
    /// Shards whose release is under way (in a task of its own), or whose actors are stopping
    /// after a missed takeover; ticks leave them alone.
    releasing: std::sync::Mutex<HashSet<u32>>,
    /// Announced whenever a release ends and none is left under way.
    idle: Notify,
    /// One release statement at a time, so the heartbeat always finds one of the node's two
    /// connections free however many releases are under way.
    statement: Semaphore,
    /// Shards released since start.
    released: AtomicU64,
}

impl Releases {
    /// None under way; at most `max_under_way` at once.
    pub(crate) fn new(max_under_way: usize) -> Self {
        Self {
            max_under_way,
            releasing: std::sync::Mutex::default(),
            idle: Notify::new(),
            statement: Semaphore::new(1),
            released: AtomicU64::new(0),
        }
    }

    /// The shards whose release is under way.
    pub(crate) fn under_way(&self) -> HashSet<u32> {
        self.releasing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Shards released since start.
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Relaxed)
    }

    /// Waits until no release is under way.
    pub(crate) async fn done(&self) {
        loop {
            // Registered before the check: a release that ends in between still wakes it.
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self
                .releasing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                return;
            }
            idle.await;
        }
    }
}

/// Starts releasing `shards` (with their epochs in the database), each in a task of its own,
/// so that however long a handoff takes the tick goes on heartbeating; at most
/// `max_releases_per_tick` under way at once, the rest at later ticks.
pub(crate) fn start<N: ReleasingNode>(node: &Arc<N>, shards: Vec<(u32, u64)>) {
    let releases = node.releases();
    let mut releasing = releases
        .releasing
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let room = releases.max_under_way.saturating_sub(releasing.len());
    for (shard, epoch) in shards.into_iter().take(room) {
        if !releasing.insert(shard) {
            continue;
        }
        let release = Releasing {
            node: Arc::clone(node),
            shards: vec![shard],
        };
        tokio::spawn(async move {
            release_shard(release.node.as_ref(), shard, epoch).await;
            drop(release);
        });
    }
}

/// Stops the actors of `shards`, taken over by others while this node was not looking (they
/// are revoked already, so they serve nothing), in a task of its own: with many shards lost at
/// once it may take a while, and the tick must go on heartbeating. Until it ends, ticks leave
/// these shards alone, as they do a release's, so none is granted here again onto actors that
/// are still stopping.
pub(crate) fn stop_lost<N: ReleasingNode>(node: &Arc<N>, shards: Vec<u32>) {
    if shards.is_empty() {
        return;
    }
    node.releases()
        .releasing
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(shards.iter().copied());
    let lost = Releasing {
        node: Arc::clone(node),
        shards,
    };
    tokio::spawn(async move {
        let handoff = lost.node.handoff().read().await.clone();
        if let Some(handoff) = handoff {
            handoff.lost(&lost.shards).await;
        }
        drop(lost);
    });
}

/// Shards under way (a release, or lost shards' actors stopping): they leave the set when it
/// ends, however it ends.
struct Releasing<N: ReleasingNode> {
    node: Arc<N>,
    shards: Vec<u32>,
}

impl<N: ReleasingNode> Drop for Releasing<N> {
    fn drop(&mut self) {
        let releases = self.node.releases();
        let idle = {
            let mut releasing = releases
                .releasing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for shard in &self.shards {
                releasing.remove(shard);
            }
            releasing.is_empty()
        };
        self.node.owned().publish_gauge();
        if idle {
            releases.idle.notify_waiters();
        }
    }
}

/// Drain, hand off, then clear the owner at `epoch`. A shard no longer served here has no
/// actors left to hand off (a self-fence stopped them): only its owner is cleared.
pub(crate) async fn release_shard<N: ReleasingNode>(node: &N, shard: u32, epoch: u64) {
    let owned = node.owned();
    if owned.epoch(shard).is_some() {
        owned.drain(shard);
        let handoff = node.handoff().read().await.clone();
        if let Some(handoff) = handoff {
            handoff.release(shard).await;
        }
        owned.revoke(shard);
    }
    let releases = node.releases();
    let turn = releases.statement.acquire().await;
    let released = ownership::release(
        node.pool(),
        node.node_id(),
        shard,
        epoch,
        node.answer_within(),
    )
    .await;
    drop(turn);
    match released {
        Ok(false) => {}
        Ok(true) => {
            releases.released.fetch_add(1, Relaxed);
            metrics::counter!("cluster_shard_releases_total").increment(1);
        }
        // Not served here any more either way; the new owner claims it once this node's
        // heartbeat or the release succeeds.
        Err(error) => tracing::warn!(shard, %error, "releasing a shard failed"),
    }
}
