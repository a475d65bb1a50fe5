//! The LRU cap: capacity permits for activations, and evicting the least recently used idle
//! actor when a new activation needs room.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::OwnedSemaphorePermit;

use crate::{PassivationReason, VirtualActor, shared::Core};

/// How often a waiting activation looks for a victim again (a busy actor may have gone quiet).
const EVICTION_RETRY: Duration = Duration::from_millis(10);

/// The result of asking for room for one more live actor.
pub(crate) enum Capacity {
    /// No `max_live_actors` limit.
    Unlimited,
    /// One of the `max_live_actors` permits, to hold until the actor has fully stopped.
    Granted(OwnedSemaphorePermit),
    /// The directory began shutting down while we waited.
    ShuttingDown,
}

/// Counts this activation among those waiting for capacity, for as long as it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Gets a capacity permit, evicting least-recently-used idle actors while there are fewer
/// evictions under way than activations waiting.
pub(crate) async fn acquire_capacity<V: VirtualActor>(core: &Core<V>) -> Capacity {
    let Some(semaphore) = core.capacity.as_ref() else {
        return Capacity::Unlimited;
    };
    if let Ok(permit) = Arc::clone(semaphore).try_acquire_owned() {
        return Capacity::Granted(permit);
    }
    core.capacity_waiters.fetch_add(1, Ordering::AcqRel);
    let _waiting = Waiting(&core.capacity_waiters);
    // Keep one acquire future for the whole wait, so this activation keeps its place in line.
    let acquire = Arc::clone(semaphore).acquire_owned();
    tokio::pin!(acquire);
    let mut retry =
        tokio::time::interval_at(tokio::time::Instant::now() + EVICTION_RETRY, EVICTION_RETRY);
    loop {
        if core.is_shutting_down() {
            return Capacity::ShuttingDown;
        }
        if core.capacity_waiters.load(Ordering::Acquire)
            > core.evictions_in_flight.load(Ordering::Acquire)
        {
            evict_lru(core);
        }
        tokio::select! {
            biased;
            permit = &mut acquire => {
                return match permit {
                    Ok(permit) => Capacity::Granted(permit),
                    // The semaphore is never closed; treat it like shutdown rather than spin.
                    Err(_) => Capacity::ShuttingDown,
                };
            }
            _ = retry.tick() => {}
        }
    }
}

/// Asks the least recently used started actor with an empty mailbox to passivate
/// ([`PassivationReason::Evicted`]). `false` if there was none to evict.
fn evict_lru<V: VirtualActor>(core: &Core<V>) -> bool {
    for _attempt in 0..3 {
        let (victim, examined) = core.recency.least_recently_used();
        core.counters.eviction_candidates_examined(examined);
        let Some(victim) = victim else {
            return false;
        };
        // Count first, so the slot's cleanup can never uncount before we counted.
        core.evictions_in_flight.fetch_add(1, Ordering::AcqRel);
        if victim.shared.claim_stop(PassivationReason::Evicted) {
            if let Some(actor) = victim.actor() {
                // An error means it is already stopping, which is what we want.
                let _ = actor.drain();
            }
            tracing::debug!(
                actor = core.actor_name,
                generation = victim.generation,
                "evicting least recently used actor"
            );
            return true;
        }
        core.evictions_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
    false
}
