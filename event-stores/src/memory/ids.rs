//! [`EventIds`]: every event id the in-memory store holds, for its store-wide uniqueness check.
//!
//! The map holds one entry per event ever stored, so on a busy store it is large, and where an
//! insert lands decides what it costs. A hash table puts each new id at a random place: with
//! millions of ids every insert is a cache miss (often a TLB miss too), and every doubling
//! copies the whole table into fresh pages. Event ids are mostly time-ordered instead (UUID v7,
//! and the ids derived from a fresh command keep its v7 timestamp), so a sorted map takes each
//! new id at its right edge, in nodes that stay in cache, and grows one small node at a time.
//! (Commands named by a caller's key have UUID v5 ids, and their events land anywhere in the
//! tree: an O(log n) insert, no worse than the hash table's miss.) Shards, chosen
//! by the id's last byte (random in both kinds of id), keep appends to different streams from
//! waiting on one lock.
//!
//! The price is memory: nodes split at the right edge stay a little over half full, about 26
//! bytes more per event than the hash table (measured: 993 → 1 070 heap bytes per ledger
//! account of three events), for 8–10 % more commands per second through the store
//! (`benches/PROFILE.md`).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use parking_lot::Mutex;
use uuid::Uuid;

/// Shards: a power of two, enough that two cores rarely meet on one lock.
const SHARDS: usize = 64;

/// Where a stored (or being stored) event id is: enough to find its event, and so to tell a
/// retried command from a reused id and to find a command's events in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IdEntry {
    /// The number of its stream (unique in the store).
    pub(super) stream: u64,
    /// Its version in that stream.
    pub(super) version: u64,
}

/// The store's event ids, sharded sorted maps (see the module documentation).
///
/// Keyed by the id's big-endian `u128`, which sorts exactly as its bytes do: the tree compares
/// keys a dozen times an insert, and two 64-bit compares cost a fraction of a 16-byte `memcmp`.
pub(super) struct EventIds {
    shards: Box<[Mutex<BTreeMap<u128, IdEntry>>]>,
}

impl Default for EventIds {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl EventIds {
    fn shard(&self, id: &Uuid) -> &Mutex<BTreeMap<u128, IdEntry>> {
        let last = id.as_bytes()[15];
        // `SHARDS` is a power of two and the slice has exactly that many shards.
        &self.shards[usize::from(last) % SHARDS]
    }

    /// Records `id` at `entry`, or returns the entry that already holds it.
    pub(super) fn claim(&self, id: Uuid, entry: IdEntry) -> Result<(), IdEntry> {
        match self.shard(&id).lock().entry(id.as_u128()) {
            Entry::Vacant(vacant) => {
                vacant.insert(entry);
                Ok(())
            }
            Entry::Occupied(taken) => Err(*taken.get()),
        }
    }

    /// Forgets `id` (a claim taken back).
    pub(super) fn release(&self, id: &Uuid) {
        self.shard(id).lock().remove(&id.as_u128());
    }

    /// Where `id` is, if it is held.
    pub(super) fn get(&self, id: &Uuid) -> Option<IdEntry> {
        self.shard(id).lock().get(&id.as_u128()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_held_once_until_released() {
        let ids = EventIds::default();
        let id = Uuid::now_v7();
        let at = IdEntry {
            stream: 1,
            version: 2,
        };
        assert_eq!(ids.claim(id, at), Ok(()));
        let other = IdEntry {
            stream: 3,
            version: 4,
        };
        assert_eq!(ids.claim(id, other), Err(at), "the first holder is kept");
        assert_eq!(ids.get(&id), Some(at));
        ids.release(&id);
        assert_eq!(ids.get(&id), None);
        assert_eq!(ids.claim(id, other), Ok(()));
        assert_eq!(ids.get(&id), Some(other));
    }

    #[test]
    fn ids_in_every_shard_are_kept_apart() {
        let ids = EventIds::default();
        let all: Vec<Uuid> = (0..4_096).map(|_| Uuid::new_v4()).collect();
        for (n, id) in (0u64..).zip(&all) {
            let at = IdEntry {
                stream: n,
                version: n,
            };
            assert_eq!(ids.claim(*id, at), Ok(()));
        }
        for (n, id) in (0u64..).zip(&all) {
            assert_eq!(ids.get(id).map(|e| e.stream), Some(n));
        }
    }
}
