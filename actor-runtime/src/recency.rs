//! The order in which live actors were last used, for eviction under `max_live_actors` and for
//! idle passivation.
//!
//! A queue of started slots with the `last_used` stamp each had when it was queued (a "second
//! chance" queue, CLOCK's FIFO form). Choosing a victim pops from the front: a slot used since
//! it was queued goes to the back with its new stamp, one that is gone is dropped, and the first
//! quiet slot unused since it was queued is the victim. Each slot is looked at most once per
//! choice, and a slot is only looked at again after it was used, so a choice costs O(1)
//! amortized, where a scan of every slot cost O(live actors) per eviction. Calls pay nothing:
//! they already stamp `last_used`; only activations, evictions and idle sweeps take the queue's
//! lock. An idle sweep takes from the front while the front was queued longer ago than the idle
//! timeout, so it looks at the actors it passivates and those used since they were queued,
//! not at every live actor.
//!
//! Slots leave the directory without telling the queue (idle passivation, requested stops), so
//! the queue is compacted whenever it holds more than twice the live actors plus a margin:
//! that keeps it, and the slots its weak references pin, bounded by the live count.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use crate::{VirtualActor, slot::Slot};

/// Entries allowed beyond twice the live count before the queue is compacted.
const COMPACTION_MARGIN: usize = 1_024;

/// Started slots, least recently queued first.
pub(crate) struct Recency<V: VirtualActor> {
    queue: Mutex<VecDeque<Queued<V>>>,
}

struct Queued<V: VirtualActor> {
    slot: Weak<Slot<V>>,
    /// The slot's `last_used` when it was queued.
    stamp: u64,
}

impl<V: VirtualActor> Recency<V> {
    pub(crate) fn new() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Queues a slot whose actor just started; `live` is the directory's live count, which
    /// bounds the queue's length.
    pub(crate) fn started(&self, slot: &Arc<Slot<V>>, live: usize) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push_back(Queued {
            slot: Arc::downgrade(slot),
            stamp: slot.shared.last_used(),
        });
        if queue.len() > live.saturating_mul(2).saturating_add(COMPACTION_MARGIN) {
            queue.retain(|queued| queued.slot.strong_count() > 0);
        }
    }

    /// The least recently used slot that is started and quiet, taken out of the queue, and how
    /// many entries were looked at; `None` if no queued slot is.
    pub(crate) fn least_recently_used(&self) -> (Option<Arc<Slot<V>>>, u64) {
        let mut victim = None;
        let examined = self.walk(None, |slot| {
            victim = Some(slot);
            false
        });
        (victim, examined)
    }

    /// Takes out the queued slots that are quiet and unused since `idle_before` (milliseconds
    /// since the directory's epoch), for idle passivation.
    pub(crate) fn idle(&self, idle_before: u64) -> Vec<Arc<Slot<V>>> {
        let mut idle = Vec::new();
        self.walk(Some(idle_before), |slot| {
            idle.push(slot);
            true
        });
        idle
    }

    /// Pops entries from the front, each at most once: drops those gone or leaving, sends to
    /// the back (with their new stamp) those used since they were queued, or since
    /// `idle_before` when given, and those not quiet, and hands the others to `take` until it
    /// returns `false`. With `idle_before`, stops at the first entry queued after it. Returns
    /// how many entries were looked at.
    fn walk(&self, idle_before: Option<u64>, mut take: impl FnMut(Arc<Slot<V>>) -> bool) -> u64 {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut examined = 0;
        for _ in 0..queue.len() {
            let Some(front) = queue.front() else {
                break;
            };
            if idle_before.is_some_and(|before| front.stamp > before) {
                break; // the rest were queued later (give or take a requeue)
            }
            let Some(queued) = queue.pop_front() else {
                break;
            };
            examined += 1;
            let Some(slot) = queued.slot.upgrade() else {
                continue;
            };
            if slot.shared.stop_reason().is_some() {
                continue; // leaving already
            }
            let used = slot.shared.last_used();
            let unused_since = idle_before.unwrap_or(queued.stamp);
            if used > unused_since || slot.actor().is_none() || !slot.shared.is_quiet() {
                queue.push_back(Queued {
                    slot: queued.slot,
                    stamp: used.max(queued.stamp),
                });
                continue;
            }
            if !take(slot) {
                break;
            }
        }
        examined
    }
}
