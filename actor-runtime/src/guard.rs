//! [`SlotGuard`]: a slot's hold on its place in the directory, from the start of its activation
//! until its actor is gone.
//!
//! The guard travels with the activation: the activation task holds it until the actor is
//! spawned, then the actor's own state holds it, so the actor's end (a passivation, a panic, a
//! kill) drops it there, and no task stays behind per live actor just to wait for that end.
//! Dropping it removes the slot (if still the same generation), gives back the capacity permit,
//! counts how the slot ended and publishes the outcome to waiting callers.

use std::sync::{Arc, atomic::Ordering};

use tokio::sync::OwnedSemaphorePermit;

use crate::{
    PassivationReason, VirtualActor,
    shared::Core,
    slot::{Phase, Slot},
};

/// Owns a slot's place in the directory; see the module docs.
pub(crate) struct SlotGuard<V: VirtualActor> {
    pub(crate) core: Arc<Core<V>>,
    pub(crate) key: V::Key,
    pub(crate) slot: Arc<Slot<V>>,
    pub(crate) capacity: Option<OwnedSemaphorePermit>,
    /// Counted among the live actors.
    pub(crate) live: bool,
    /// The actor started: its end is counted as a passivation or a crash.
    pub(crate) started: bool,
    /// What waiting callers learn when the guard drops (before the actor started).
    pub(crate) outcome: Phase<V::ActivationError>,
}

impl<V: VirtualActor> SlotGuard<V> {
    pub(crate) fn new(core: &Arc<Core<V>>, key: V::Key, slot: Arc<Slot<V>>) -> Self {
        Self {
            core: Arc::clone(core),
            key,
            slot,
            capacity: None,
            live: false,
            started: false,
            // Whatever ends an activation without setting an outcome (a panic, a dropped
            // task) leaves its callers this.
            outcome: Phase::Broken,
        }
    }
}

impl<V: VirtualActor> Drop for SlotGuard<V> {
    fn drop(&mut self) {
        let generation = self.slot.generation;
        self.core
            .slots
            .remove_if(&self.key, |_, slot| slot.generation == generation);
        let shared = &self.slot.shared;
        if self.started {
            if shared.was_passivated() {
                let reason = shared.stop_reason().unwrap_or(PassivationReason::Requested);
                self.core.counters.passivated(reason);
                tracing::debug!(actor = self.core.actor_name, key = %self.key, %reason, "actor passivated");
            } else {
                self.core.counters.crashed();
                tracing::warn!(actor = self.core.actor_name, key = %self.key, "actor stopped abnormally (panic or killed)");
            }
            self.outcome = Phase::Stopped;
        } else if matches!(self.outcome, Phase::Failed(_) | Phase::Broken) {
            self.core.counters.activation_failed();
        }
        if self.live {
            self.core.counters.live_ended();
        }
        if shared.stop_reason() == Some(PassivationReason::Evicted) {
            self.core.evictions_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        drop(self.capacity.take());
        // Removed from the map first, so woken callers find the key free.
        let outcome = std::mem::replace(&mut self.outcome, Phase::Stopped);
        self.slot.set_phase(outcome);
    }
}
