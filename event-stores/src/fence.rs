//! Fencing tokens: the right to write a shard's streams, checked by the append itself.
//!
//! In a cluster each aggregate belongs to a shard, and each shard has one owner at a time,
//! recorded with an epoch that grows on every change of owner. An owner appends with
//! [`EventStore::append_fenced`](crate::EventStore::append_fenced), carrying the [`Fence`] it
//! was granted; the store refuses the append with [`StoreError::Fenced`](crate::StoreError::Fenced)
//! unless the shard's current owner and epoch are still exactly those. A node that was paused
//! or cut off and lost its shards therefore cannot write after the takeover, whatever it
//! believes. In PostgreSQL the check runs in the append statement under a share lock of the
//! shard's row in `shard_owners`, so a takeover cannot happen while an append is in flight (the
//! cluster's claim skips a row held so and tries again at its next tick), and an append that
//! waited for a takeover sees the new owner and fails.

use uuid::Uuid;

/// Ownership of one shard at one epoch, as granted to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The shard.
    pub shard: u32,
    /// The owning node.
    pub owner: Uuid,
    /// The epoch of that ownership (grows on every change of owner).
    pub epoch: u64,
}
