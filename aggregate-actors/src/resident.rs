//! The resident tier: aggregates kept in memory without an actor.
//!
//! An aggregate lives in one of three tiers:
//!
//! - **hot**: a ractor actor, while it has traffic;
//! - **resident**: its actor stopped (idle, or evicted under the live-actor cap), and what it
//!   needs to start again without reading a store stays here, in a compact [`Resident`] entry:
//!   no task, no channel, its recent commands as they are (fixed-size records, smaller than
//!   their encoding and with nothing to decode), and its state either as the actor held it
//!   (small states: promotion moves it back, nothing to decode) or, above
//!   [`ResidentConfig::decoded_max_bytes`], encoded as a snapshot encodes it (compact);
//! - **cold**: only in the stores.
//!
//! A byte budget bounds the tier. Entries are kept in least-recently-used order (the order
//! their actors stopped), in shards each with its share of the budget; going over it demotes
//! the oldest entries to cold, and one whose state is ahead of its last snapshot is snapshotted
//! first, from the bytes it already holds. Promotion (the next message for the id) takes the
//! entry out and starts an actor from it, with no store read.
//!
//! One writer per id across every transition: only a live actor appends. An entry is put here
//! by the actor's own passivation, before the runtime frees the id, and taken out by the next
//! activation of the id, which the runtime starts only once the id is free; demotion and
//! promotion both *take* the entry under its shard's lock, so exactly one of them gets it. An
//! activation that loses to a demotion reads the stores, which hold every event the entry had.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use hashlink::LinkedHashMap;
use parking_lot::{Mutex, MutexGuard};
use uuid::Uuid;

use crate::dedup::RecentCommand;

/// Shards of the tier (a power of two); each has its own lock, order and share of the budget.
const SHARDS: usize = 16;

/// Bytes an entry costs beyond its id's and state's heap bytes: the map's node (id and entry
/// inline, two list links, the hash table's slot) and allocator rounding.
const fn entry_overhead<S>() -> usize {
    std::mem::size_of::<(String, Resident<S>)>() + 64
}

/// How much memory the resident tier of one aggregate type may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentConfig {
    /// Bytes of resident entries (ids, encoded states and bookkeeping) before the least
    /// recently used are demoted to cold. 0 turns the tier off: a stopping actor leaves nothing
    /// behind but its snapshot. Default: 64 MiB, about 100 000 small aggregates.
    pub budget_bytes: usize,
    /// States whose encoding takes at most this many bytes stay decoded in their entry, as the
    /// actor held them: promotion moves the state back into the next actor, with nothing to
    /// decode. Larger states are kept encoded, as a snapshot encodes them, which is compact
    /// whatever their in-memory shape. A decoded state is charged its inline size plus its
    /// encoded length (a proxy for its heap bytes; the in-memory form of a small state is
    /// usually about as large), an encoded one its inline size too (an entry has room for
    /// either). 0 keeps every state encoded. Default: 1 KiB.
    ///
    /// The proxy undercharges a state that holds far more memory than it encodes to (a
    /// collection left with spare capacity after removals, a `String` truncated in place):
    /// for such a type set 0 here, or shrink the collection in `apply`, so that the budget
    /// bounds the memory it is meant to.
    pub decoded_max_bytes: usize,
}

impl Default for ResidentConfig {
    fn default() -> Self {
        Self {
            budget_bytes: 64 * 1024 * 1024,
            decoded_max_bytes: 1024,
        }
    }
}

impl ResidentConfig {
    /// No resident tier.
    pub fn off() -> Self {
        Self::with_budget(0)
    }

    /// A tier of `budget_bytes`, the other settings their defaults.
    pub fn with_budget(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            ..Self::default()
        }
    }
}

/// How a resident entry holds its aggregate's state.
#[derive(Debug)]
pub(crate) enum ResidentState<S> {
    /// As the actor held it, inline in the entry: the next actor takes it back as it is.
    Decoded(S),
    /// Encoded as a snapshot encodes it, so a demotion that must snapshot wraps these bytes
    /// into a body without encoding the state again.
    Encoded(Box<[u8]>),
}

/// What a stopped aggregate keeps in memory: enough to start its next actor without a read.
#[derive(Debug)]
pub(crate) struct Resident<S> {
    pub(crate) version: u64,
    pub(crate) last_event_id: Uuid,
    pub(crate) last_snapshot_version: u64,
    pub(crate) last_snapshot_size: u64,
    pub(crate) event_bytes_since_snapshot: u64,
    pub(crate) last_snapshot_at: std::time::Instant,
    pub(crate) state: ResidentState<S>,
    /// The length of the state's encoding (what [`ResidentState::Encoded`] holds).
    pub(crate) state_len: usize,
    /// The recent commands, oldest first.
    pub(crate) commands: Box<[RecentCommand]>,
}

impl<S> Resident<S> {
    /// Bytes the budget charges for this entry under an id of `id_len` bytes.
    fn cost(&self, id_len: usize) -> usize {
        entry_overhead::<S>() + id_len + self.heap_bytes()
    }

    fn is_encoded(&self) -> bool {
        matches!(self.state, ResidentState::Encoded(_))
    }

    /// Bytes its state and commands take on the heap (for a decoded state, an estimate: its
    /// encoded length).
    fn heap_bytes(&self) -> usize {
        self.state_len + std::mem::size_of_val(&*self.commands)
    }

    /// Its state is ahead of its newest snapshot.
    pub(crate) fn is_ahead_of_snapshot(&self) -> bool {
        self.version > self.last_snapshot_version
    }
}

/// Counters of one type's resident tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResidentStats {
    /// Aggregates resident now.
    pub entries: usize,
    /// Bytes they are charged (ids, states, bookkeeping, map overhead).
    pub bytes: usize,
    /// Of the entries, those holding their state encoded (larger than
    /// [`ResidentConfig::decoded_max_bytes`]); the others hold it decoded.
    pub encoded: usize,
    /// The budget (0 = the tier is off).
    pub budget_bytes: usize,
    /// Aggregates that became resident when their actor stopped.
    pub kept: u64,
    /// Activations that started from a resident entry, with no store read.
    pub promotions: u64,
    /// Entries an activation took out but whose state did not decode: dropped, and the stores
    /// read instead (not promotions). Anything but 0 points at a state codec that does not
    /// read back what it wrote.
    pub undecodable: u64,
    /// Entries demoted to cold (over the budget, or on shutdown and requested passivation).
    pub demotions: u64,
    /// Of the demotions, those that snapshotted first (their state was ahead of a snapshot).
    pub demotion_snapshots: u64,
}

/// One shard: its entries in least-recently-used order, and its counters, kept under its lock
/// rather than in atomics every shard would share (each a cache line both cores fight over on
/// every promotion and every passivation).
struct Shard<S> {
    entries: LinkedHashMap<String, Resident<S>>,
    bytes: usize,
    encoded: usize,
    kept: u64,
    /// Entries taken out by activations: promotions, and the few that then failed to decode
    /// (counted apart, in [`ResidentSet::undecodable`], so the common path takes no second
    /// lock to count after decoding).
    taken: u64,
}

impl<S> Default for Shard<S> {
    fn default() -> Self {
        Self {
            entries: LinkedHashMap::new(),
            bytes: 0,
            encoded: 0,
            kept: 0,
            taken: 0,
        }
    }
}

impl<S> Shard<S> {
    /// Accounts for `entry` (under an id of `id_len` bytes) leaving the shard.
    fn forget(&mut self, id_len: usize, entry: &Resident<S>) {
        self.bytes -= entry.cost(id_len);
        self.encoded -= usize::from(entry.is_encoded());
    }
}

/// One aggregate type's resident entries (`S`: its state).
pub(crate) struct ResidentSet<S> {
    shards: Box<[Mutex<Shard<S>>]>,
    hasher: foldhash::fast::FixedState,
    budget: usize,
    shard_budget: usize,
    decoded_max_bytes: usize,
    demotions: AtomicU64,
    demotion_snapshots: AtomicU64,
    undecodable: AtomicU64,
}

impl<S> ResidentSet<S> {
    pub(crate) fn new(config: ResidentConfig) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::FixedState::default(),
            budget: config.budget_bytes,
            shard_budget: config.budget_bytes / SHARDS,
            decoded_max_bytes: config.decoded_max_bytes,
            demotions: AtomicU64::new(0),
            demotion_snapshots: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
        }
    }

    /// The tier keeps entries at all.
    pub(crate) fn is_on(&self) -> bool {
        self.budget > 0
    }

    /// States encoded in at most this many bytes are kept decoded.
    pub(crate) fn decoded_max_bytes(&self) -> usize {
        self.decoded_max_bytes
    }

    fn shard(&self, id: &str) -> MutexGuard<'_, Shard<S>> {
        // The low bits pick the shard; `SHARDS` is a power of two.
        let index = (self.hasher.hash_one(id) as usize) & (SHARDS - 1);
        self.shards[index].lock()
    }

    /// Keeps `entry` for `id`, newest in its shard's order, and returns what that pushed out of
    /// the budget (least recently used first) for the caller to demote. An entry larger than a
    /// shard's share of the budget is returned at once.
    pub(crate) fn keep(&self, id: String, entry: Resident<S>) -> Vec<(String, Resident<S>)> {
        let id_len = id.len();
        let cost = entry.cost(id_len);
        if cost > self.shard_budget {
            return vec![(id, entry)];
        }
        let encoded = entry.is_encoded();
        let mut shard = self.shard(&id);
        shard.bytes += cost;
        shard.encoded += usize::from(encoded);
        if let Some(old) = shard.entries.insert(id, entry) {
            // The runtime frees an id only after its actor passivated, and the next activation
            // takes the entry, so there is never an older one; should there be, it is stale.
            shard.forget(id_len, &old);
        }
        shard.kept += 1;
        let mut pushed_out = Vec::new();
        while shard.bytes > self.shard_budget {
            let Some((old_id, old)) = shard.entries.pop_front() else {
                break;
            };
            shard.forget(old_id.len(), &old);
            pushed_out.push((old_id, old));
        }
        pushed_out
    }

    /// Takes the entry of `id` out for its next actor: a promotion, unless its state then
    /// fails to decode (see [`undecodable`](Self::undecodable)).
    pub(crate) fn take(&self, id: &str) -> Option<Resident<S>> {
        self.take_out(id, true)
    }

    /// Takes the entry of `id` out, if any, for the caller to demote.
    pub(crate) fn take_to_demote(&self, id: &str) -> Option<Resident<S>> {
        self.take_out(id, false)
    }

    /// Removes the entry of `id` under its shard's lock, so that of a promotion and a demotion
    /// racing for it exactly one gets it; `for_activation` counts it as taken by an activation.
    fn take_out(&self, id: &str, for_activation: bool) -> Option<Resident<S>> {
        if !self.is_on() {
            return None;
        }
        let mut shard = self.shard(id);
        let entry = shard.entries.remove(id)?;
        shard.forget(id.len(), &entry);
        shard.taken += u64::from(for_activation);
        Some(entry)
    }

    /// Counts an entry taken for an activation (by [`take`](Self::take)) whose state did not
    /// decode: dropped, not promoted.
    pub(crate) fn undecodable(&self) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes out every entry whose id `matches`, for the caller to demote.
    pub(crate) fn take_matching(
        &self,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<(String, Resident<S>)> {
        let mut taken = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let ids: Vec<String> = shard
                .entries
                .keys()
                .filter(|id| matches(id))
                .cloned()
                .collect();
            for id in ids {
                if let Some(entry) = shard.entries.remove(&id) {
                    shard.forget(id.len(), &entry);
                    taken.push((id, entry));
                }
            }
        }
        taken
    }

    /// Counts a demotion; `snapshotted` when it handed a snapshot to the writer first.
    pub(crate) fn demoted(&self, snapshotted: bool) {
        self.demotions.fetch_add(1, Ordering::Relaxed);
        if snapshotted {
            self.demotion_snapshots.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The tier's counters: the shards' sums, each shard read under its lock.
    pub(crate) fn stats(&self) -> ResidentStats {
        let mut stats = ResidentStats {
            budget_bytes: self.budget,
            demotions: self.demotions.load(Ordering::Relaxed),
            demotion_snapshots: self.demotion_snapshots.load(Ordering::Relaxed),
            undecodable: self.undecodable.load(Ordering::Relaxed),
            ..ResidentStats::default()
        };
        let mut taken = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock();
            stats.entries += shard.entries.len();
            stats.bytes += shard.bytes;
            stats.encoded += shard.encoded;
            stats.kept += shard.kept;
            taken += shard.taken;
        }
        // An undecodable entry is counted after its take, so the difference never goes below
        // 0; saturating all the same, for a statistic is no reason to panic.
        stats.promotions = taken.saturating_sub(stats.undecodable);
        stats
    }
}
