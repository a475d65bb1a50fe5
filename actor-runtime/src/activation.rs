//! One activation of one key, in a task that ends once the actor is up: wait for capacity,
//! activate (bounded concurrency), and hand the slot's [`SlotGuard`] to the actor, whose end
//! drops it. A live actor costs no task but its own.

use std::sync::Arc;

use ractor::{Actor, SpawnErr};
use tracing::Instrument;

use crate::{
    VirtualActor,
    eviction::{self, Capacity},
    guard::SlotGuard,
    host::{ActivationFailure, Host, HostArgs},
    shared::Core,
    slot::{Phase, Slot},
    spans::span_if_traced,
};

/// Starts the task that activates `slot` (already in the map for `key`). `creation`: the
/// first message declares the key new (see [`VirtualActor::is_creation`]).
pub(crate) fn start<V: VirtualActor>(
    core: &Arc<Core<V>>,
    key: V::Key,
    slot: Arc<Slot<V>>,
    creation: bool,
) {
    let guard = SlotGuard::new(core, key, slot);
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
            // Dropping the guard tells the waiting callers (`Broken`).
        }
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
    let span = span_if_traced(|| {
        tracing::info_span!(
            "actor_runtime.activate",
            actor = core.actor_name,
            key = %guard.key,
            generation = guard.slot.generation,
        )
    });
    // From here the guard is the actor's: `pre_start` keeps it in the actor's state, or sets
    // the outcome and drops it when the activation fails.
    let args = HostArgs {
        context: Arc::clone(&core.context),
        guard,
        creation,
    };
    let spawned = Actor::spawn(None, Host::<V>::new(), args)
        .instrument(span.clone())
        .await;
    drop(permit);
    match spawned {
        // The actor runs on its own; its end drops the guard.
        Ok(_started) => span.in_scope(|| tracing::debug!("actor activated")),
        Err(error) => span.in_scope(|| log_failure::<V>(error)),
    }
}

/// Logs why an activation failed (its callers learn it from the guard).
fn log_failure<V: VirtualActor>(error: SpawnErr) {
    match error {
        SpawnErr::StartupFailed(inner) => {
            match inner.downcast::<ActivationFailure<V::ActivationError>>() {
                Ok(failure) => tracing::warn!(error = %failure.0, "actor activation failed"),
                Err(other) => tracing::error!(error = %other, "actor activation panicked"),
            }
        }
        other => tracing::error!(error = %other, "actor could not be spawned"),
    }
}
