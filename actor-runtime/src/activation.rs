//! The life of one slot, in one task: wait for capacity, activate (bounded concurrency), run,
//! and clean up when the actor stops — or when the task itself is dropped.

use std::sync::{
    Arc,
    atomic::{Ordering, fence},
};

use ractor::{Actor, SpawnErr};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::{
    PassivationReason, VirtualActor,
    eviction::{self, Capacity},
    host::{ActivationFailure, Host, HostArgs},
    shared::Core,
    slot::{Phase, Slot},
};

/// Starts the task that activates `slot` (already in the map for `key`) and watches it until it
/// stops. `creation`: the first message declares the key new (see [`VirtualActor::is_creation`]).
pub(crate) fn start<V: VirtualActor>(
    core: &Arc<Core<V>>,
    key: V::Key,
    slot: Arc<Slot<V>>,
    creation: bool,
) {
    let mut guard = SlotGuard {
        core: Arc::clone(core),
        key,
        slot,
        capacity: None,
        live: false,
        outcome: Phase::Stopped,
    };
    let runtime = tokio::runtime::Handle::try_current()
        .ok()
        .or_else(|| core.runtime.clone());
    match runtime {
        Some(runtime) => {
            runtime.spawn(run(guard, creation));
        }
        None => {
            tracing::error!(
                actor = core.actor_name,
                key = %guard.key,
                "cannot activate an actor outside a Tokio runtime"
            );
            guard.outcome = Phase::Broken;
        }
    }
}

/// Owns a slot's place in the directory; dropping it removes the slot (if still the same
/// generation), gives back its capacity, and publishes the outcome to waiting callers.
struct SlotGuard<V: VirtualActor> {
    core: Arc<Core<V>>,
    key: V::Key,
    slot: Arc<Slot<V>>,
    capacity: Option<OwnedSemaphorePermit>,
    live: bool,
    outcome: Phase<V::ActivationError>,
}

impl<V: VirtualActor> Drop for SlotGuard<V> {
    fn drop(&mut self) {
        let generation = self.slot.generation;
        self.core
            .slots
            .remove_if(&self.key, |_, slot| slot.generation == generation);
        if self.live {
            self.core.counters.live_ended();
        }
        if self.slot.shared.stop_reason() == Some(PassivationReason::Evicted) {
            self.core.evictions_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        drop(self.capacity.take());
        // Removed from the map first, so woken callers find the key free.
        let outcome = std::mem::replace(&mut self.outcome, Phase::Stopped);
        self.slot.set_phase(outcome);
    }
}

async fn run<V: VirtualActor>(mut guard: SlotGuard<V>, creation: bool) {
    let core = Arc::clone(&guard.core);
    match eviction::acquire_capacity(&core).await {
        Capacity::Unlimited => {}
        Capacity::Granted(permit) => guard.capacity = Some(permit),
        Capacity::ShuttingDown => {
            guard.outcome = Phase::Refused;
            return;
        }
    }
    guard.live = true;
    core.counters.live_started();

    let permit = Arc::clone(&core.activation_permits).acquire_owned().await;
    if core.is_shutting_down() {
        guard.outcome = Phase::Refused;
        return;
    }
    let span = tracing::info_span!(
        "actor_runtime.activate",
        actor = core.actor_name,
        key = %guard.key,
        generation = guard.slot.generation,
    );
    let args = HostArgs {
        key: guard.key.clone(),
        context: Arc::clone(&core.context),
        shared: Arc::clone(&guard.slot.shared),
        creation,
    };
    let spawned = Actor::spawn(None, Host::<V>::new(), args)
        .instrument(span.clone())
        .await;
    drop(permit);

    let (actor, join) = match spawned {
        Ok(started) => started,
        Err(error) => {
            core.counters.activation_failed();
            guard.outcome = span.in_scope(|| failure_phase::<V>(error));
            return;
        }
    };
    core.counters.activated();
    span.in_scope(|| tracing::debug!("actor activated"));
    guard.slot.set_running(actor);
    if core.capacity.is_some() {
        core.recency.started(&guard.slot, core.counters.live());
    }
    // Pairs with the fence in `Core::begin_shutdown`: either shutdown sees this actor, or we
    // see the shutdown flag.
    fence(Ordering::SeqCst);
    if core.is_shutting_down() {
        guard.slot.request_stop(PassivationReason::Shutdown);
    }

    let joined = join.await;
    let shared = &guard.slot.shared;
    if joined.is_ok() && shared.was_passivated() {
        let reason = shared.stop_reason().unwrap_or(PassivationReason::Requested);
        core.counters.passivated(reason);
        span.in_scope(|| tracing::debug!(%reason, "actor passivated"));
    } else {
        core.counters.crashed();
        span.in_scope(|| tracing::warn!("actor stopped abnormally (panic or killed)"));
    }
    guard.outcome = Phase::Stopped;
}

/// What waiting callers learn from a failed spawn.
fn failure_phase<V: VirtualActor>(error: SpawnErr) -> Phase<V::ActivationError> {
    match error {
        SpawnErr::StartupFailed(inner) => {
            match inner.downcast::<ActivationFailure<V::ActivationError>>() {
                Ok(failure) => {
                    tracing::warn!(error = %failure.0, "actor activation failed");
                    Phase::Failed(Arc::clone(&failure.0))
                }
                Err(other) => {
                    tracing::error!(error = %other, "actor activation panicked");
                    Phase::Broken
                }
            }
        }
        other => {
            tracing::error!(error = %other, "actor could not be spawned");
            Phase::Broken
        }
    }
}
