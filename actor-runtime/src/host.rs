//! The ractor actor that hosts one [`VirtualActor`].
//!
//! `pre_start` runs [`VirtualActor::activate`] (or `activate_new`) and marks the slot running,
//! `handle` gives the message's mailbox place back and runs [`VirtualActor::handle`],
//! `post_stop` (reached only by a drain, never after a panic) runs [`VirtualActor::passivate`]
//! with the recorded reason. The state holds the slot's [`SlotGuard`], so however the actor
//! ends, dropping its state frees the slot.

use std::{
    fmt,
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{Ordering, fence},
    },
};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{
    PassivationReason, VirtualActor,
    guard::SlotGuard,
    reply::IN_HANDLER,
    slot::{Envelope, Phase, SlotShared},
    timer::Timers,
};

/// The ractor actor definition (stateless; the virtual actor lives in [`HostState`]).
pub(crate) struct Host<V>(PhantomData<fn() -> V>);

impl<V> Host<V> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

/// What `pre_start` needs to activate the virtual actor.
pub(crate) struct HostArgs<V: VirtualActor> {
    pub(crate) context: Arc<V::Context>,
    /// The slot's place in the directory, handed over to the actor.
    pub(crate) guard: SlotGuard<V>,
    /// The first message declares the key new: [`VirtualActor::activate_new`] builds the actor.
    pub(crate) creation: bool,
}

/// The running actor and its slot's guard.
pub(crate) struct HostState<V: VirtualActor> {
    actor: V,
    shared: Arc<SlotShared>,
    /// Dropped with the state when the actor ends, however it ends.
    _guard: SlotGuard<V>,
}

/// Carries a typed activation error through ractor's boxed startup error, to be downcast back.
pub(crate) struct ActivationFailure<E>(pub(crate) Arc<E>);

impl<E: fmt::Debug> fmt::Debug for ActivationFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Display> fmt::Display for ActivationFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: std::error::Error> std::error::Error for ActivationFailure<E> {}

impl<V: VirtualActor> Actor for Host<V> {
    type Msg = Envelope<V>;
    type State = HostState<V>;
    type Arguments = HostArgs<V>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let HostArgs {
            context,
            mut guard,
            creation,
        } = args;
        // A panic in `activate` drops the guard with its outcome still `Broken`.
        let activated = if creation {
            V::activate_new(&guard.key, &context).await
        } else {
            V::activate(&guard.key, &context).await
        };
        let mut actor = match activated {
            Ok(actor) => actor,
            Err(error) => {
                let error = Arc::new(error);
                guard.outcome = Phase::Failed(Arc::clone(&error));
                return Err(Box::new(ActivationFailure(error)));
            }
        };
        let shared = Arc::clone(&guard.slot.shared);
        actor.attach_timers(Timers::new(myself.clone(), Arc::clone(&shared)));
        shared.touch();
        let core = Arc::clone(&guard.core);
        core.counters.activated();
        guard.started = true;
        guard.slot.set_running(myself);
        // Pairs with the fences in `Core::begin_shutdown` and `Core::stop_matching`: either the
        // shutdown (or a handoff's listing) sees this actor, or we see the shutdown flag (or
        // that the key has moved). A key that moved while it was activating (its call checked
        // the placement before the move) would otherwise be missed by the handoff and serve
        // its state from here after another node took over.
        fence(Ordering::SeqCst);
        if core.is_shutting_down() {
            guard.slot.request_stop(PassivationReason::Shutdown);
        } else if !core.placement.is_local(&guard.key) {
            guard.slot.request_stop(PassivationReason::Requested);
        }
        core.recency.started(&guard.slot, core.counters.live());
        Ok(HostState {
            actor,
            shared,
            _guard: guard,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        envelope: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Envelope {
            message,
            permit,
            traffic,
        } = envelope;
        // Busy first, then free the mailbox place: the actor never looks quiet in between.
        // The place is freed before `handle` so that a caller who got its answer (sent from
        // inside `handle`) is never refused on its next call because of its own old message.
        state.shared.begin_handling();
        drop(permit);
        // Boxed: unboxed, the handler's future would be part of this actor's task for its whole
        // life, idle or not, and a live actor's memory is what bounds how many stay live (for an
        // aggregate that was 2.5 KiB more per actor, `benches/PROFILE.md`, section 1). A box per
        // message costs less than that memory at a million actors.
        IN_HANDLER
            .scope((), Box::pin(state.actor.handle(message)))
            .await;
        state.shared.end_handling(traffic);
        if state.actor.should_passivate() && state.shared.claim_stop(PassivationReason::Requested) {
            // The actor holds nothing worth keeping: stop after what is already queued.
            let _ = myself.drain();
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Every stop we trigger records a reason first; default defensively.
        let reason = state
            .shared
            .stop_reason()
            .unwrap_or(PassivationReason::Requested);
        // Boxed for the same reason as `handle`'s future: it runs once, at the end.
        Box::pin(state.actor.passivate(reason)).await;
        state.shared.mark_passivated();
        Ok(())
    }
}
