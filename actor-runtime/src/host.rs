//! The ractor actor that hosts one [`VirtualActor`].
//!
//! `pre_start` runs [`VirtualActor::activate`] (or `activate_new`), `handle` gives the message's mailbox place back
//! and runs [`VirtualActor::handle`], `post_stop` (reached only by a drain, never after a
//! panic) runs [`VirtualActor::passivate`] with the recorded reason.

use std::{fmt, marker::PhantomData, sync::Arc};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{
    PassivationReason, VirtualActor,
    reply::IN_HANDLER,
    slot::{Envelope, SlotShared},
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
    pub(crate) key: V::Key,
    pub(crate) context: Arc<V::Context>,
    pub(crate) shared: Arc<SlotShared>,
    /// The first message declares the key new: [`VirtualActor::activate_new`] builds the actor.
    pub(crate) creation: bool,
}

/// The running actor and its slot's shared half.
pub(crate) struct HostState<V> {
    actor: V,
    shared: Arc<SlotShared>,
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
        let activated = if args.creation {
            V::activate_new(&args.key, &args.context).await
        } else {
            V::activate(&args.key, &args.context).await
        };
        match activated {
            Ok(mut actor) => {
                actor.attach_timers(Timers::new(myself, Arc::clone(&args.shared)));
                args.shared.touch();
                Ok(HostState {
                    actor,
                    shared: args.shared,
                })
            }
            Err(error) => Err(Box::new(ActivationFailure(Arc::new(error)))),
        }
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
        IN_HANDLER.scope((), state.actor.handle(message)).await;
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
        state.actor.passivate(reason).await;
        state.shared.mark_passivated();
        Ok(())
    }
}
