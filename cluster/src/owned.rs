//! The shards this node owns, with their epochs: read on every call (placement) and every
//! append (fencing), so it is a lock-free array, one atomic epoch per shard (0 = not owned).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// This node's owned shards and their epochs.
///
/// A shard being released is *draining*: it takes no new calls ([`serves`](Self::serves) is
/// false) but its fence stays valid ([`epoch`](Self::epoch)) until the release is written, so
/// the commands already queued and the passivation snapshots complete.
///
/// Serving is also bounded by a *lease* on this process's monotonic clock, renewed by every
/// successful heartbeat until `ttl - self_fence_margin` after it was sent: a node that was
/// paused or starved stops serving the moment it wakes up, before its next tick has checked
/// whether its shards are still its own.
#[derive(Debug)]
pub struct OwnedShards {
    epochs: Vec<AtomicU64>,
    draining: Vec<AtomicBool>,
    base: Instant,
    /// Milliseconds after `base` until which shards may be served.
    lease_until: AtomicU64,
    /// Appends refused by the fence (here or by the database).
    fenced_appends: AtomicU64,
}

impl OwnedShards {
    /// None of `shard_count` shards owned.
    pub fn new(shard_count: u32) -> Self {
        Self {
            epochs: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            draining: (0..shard_count).map(|_| AtomicBool::new(false)).collect(),
            base: Instant::now(),
            lease_until: AtomicU64::new(0),
            fenced_appends: AtomicU64::new(0),
        }
    }

    /// Counts an append refused by the fence.
    pub(crate) fn count_fenced(&self) {
        self.fenced_appends.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends refused by the fence so far: this node no longer (or never) owned their shard.
    pub fn fenced_appends(&self) -> u64 {
        self.fenced_appends.load(Ordering::Relaxed)
    }

    /// Lets owned shards be served until `until` (see the type's documentation).
    pub(crate) fn renew_lease(&self, until: Instant) {
        let millis = until.saturating_duration_since(self.base).as_millis();
        self.lease_until
            .store(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::Release);
    }

    fn lease_valid(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.lease_until.load(Ordering::Acquire)
    }

    /// True when calls for `shard` are served here: owned, not draining, and the lease valid.
    pub fn serves(&self, shard: u32) -> bool {
        self.lease_valid()
            && self.epoch(shard).is_some()
            && self
                .draining
                .get(shard as usize)
                .is_some_and(|d| !d.load(Ordering::Acquire))
    }

    /// Stops taking new calls for `shard`, keeping its fence until [`revoke`](Self::revoke).
    pub(crate) fn drain(&self, shard: u32) {
        if let Some(flag) = self.draining.get(shard as usize) {
            flag.store(true, Ordering::Release);
        }
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        u32::try_from(self.epochs.len()).unwrap_or(u32::MAX)
    }

    /// The epoch at which this node owns `shard`, if it does.
    pub fn epoch(&self, shard: u32) -> Option<u64> {
        let epoch = self.epochs.get(shard as usize)?.load(Ordering::Acquire);
        (epoch != 0).then_some(epoch)
    }

    /// Records ownership of `shard` at `epoch` (≥ 1).
    pub(crate) fn grant(&self, shard: u32, epoch: u64) {
        if let Some(slot) = self.epochs.get(shard as usize) {
            slot.store(epoch.max(1), Ordering::Release);
        }
        if let Some(flag) = self.draining.get(shard as usize) {
            flag.store(false, Ordering::Release);
        }
    }

    /// Stops serving `shard` locally; returns the epoch it was owned at.
    pub(crate) fn revoke(&self, shard: u32) -> Option<u64> {
        let epoch = self.epochs.get(shard as usize)?.swap(0, Ordering::AcqRel);
        (epoch != 0).then_some(epoch)
    }

    /// Stops serving every shard (self-fencing); returns how many were owned.
    pub(crate) fn revoke_all(&self) -> usize {
        self.epochs
            .iter()
            .filter(|slot| slot.swap(0, Ordering::AcqRel) != 0)
            .count()
    }

    /// The shards owned now.
    pub fn owned(&self) -> Vec<u32> {
        (0..self.shard_count())
            .filter(|&shard| self.epoch(shard).is_some())
            .collect()
    }

    /// How many shards are owned now.
    pub fn len(&self) -> usize {
        self.epochs
            .iter()
            .filter(|slot| slot.load(Ordering::Acquire) != 0)
            .count()
    }

    /// True when no shard is owned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the shards-owned gauge to what is served now.
    pub(crate) fn publish_gauge(&self) {
        metrics::gauge!("cluster_shards_owned").set(self.len() as f64);
    }
}
