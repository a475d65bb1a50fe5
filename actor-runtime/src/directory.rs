//! [`Directory`]: get-or-activate by key, calls, passivation and shutdown.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{Ordering, fence},
    },
    time::Duration,
};

use dashmap::mapref::entry::Entry;
use futures::future::Either;
use ractor::MessagingErr;

use crate::{
    LocalPlacement, PassivationReason, Placement, Reply, RuntimeConfig, RuntimeError, RuntimeStats,
    VirtualActor, activation,
    deadlines::instant_after,
    reply::{Answer, ReplyReceiver},
    shared::Core,
    slot::{Envelope, Phase, Slot, SlotShared},
    sweeper,
};

/// How long a caller whose message crashed its actor waits for that actor to be gone.
const CRASH_SETTLE: Duration = Duration::from_secs(1);

/// The result of a call to a virtual actor.
pub type CallResult<R, V> = Result<R, RuntimeError<<V as VirtualActor>::ActivationError>>;

/// What one attempt to hand a message to its key's live actor came to.
enum Attempt<V: VirtualActor> {
    /// In the live actor's mailbox.
    Sent(Arc<Slot<V>>),
    /// Refused for good.
    Refused(RuntimeError<V::ActivationError>),
    /// No live actor took it: the message comes back, to try again after waiting on the slot.
    Wait(V::Message, Arc<Slot<V>>, Await),
    /// The key is not (or no longer) served here: the message comes back unsent.
    Elsewhere(V::Message),
}

/// Where a message refused because its key is served elsewhere is put back, for a caller that
/// wants to send it there ([`Directory::call_timeout_or_misplaced`]); `None` drops it. Boxed,
/// so that the callers that keep one hold a pointer, not a message, in their futures.
type MisplacedSlot<'a, V> = Option<&'a mut Option<Box<<V as VirtualActor>::Message>>>;

/// A message the directory did not send because its key is not served on this node (any
/// more): it reached no actor, so it can be sent to the key's owner instead.
pub struct Misplaced<M>(pub Box<M>);

impl<M> fmt::Debug for Misplaced<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Misplaced(..)")
    }
}

/// What a message that found no live actor waits for before its next attempt.
#[derive(Clone, Copy)]
enum Await {
    /// The slot's activation to end (in success or failure).
    Activation,
    /// The draining actor to be gone.
    Stop,
}

/// A directory of virtual actors of type `V`, keyed by [`VirtualActor::Key`].
///
/// Calling a key activates its actor if needed (exactly once, however many calls race), then
/// delivers the message to its bounded mailbox and waits for the reply. The hot path is one
/// concurrent-map lookup, one mailbox-place reservation and one ractor send: there is no central
/// actor and no global lock.
///
/// Cloning is cheap and shares the directory. When the last clone is dropped the directory
/// starts shutting down in the background (each actor finishes its mailbox and passivates with
/// [`PassivationReason::Shutdown`]); call [`shutdown`](Directory::shutdown) to wait for it.
pub struct Directory<V: VirtualActor> {
    handle: Arc<Handle<V>>,
}

/// Owned by the user-facing clones; dropping the last one begins shutdown.
struct Handle<V: VirtualActor> {
    core: Arc<Core<V>>,
}

impl<V: VirtualActor> Drop for Handle<V> {
    fn drop(&mut self) {
        self.core.begin_shutdown();
    }
}

impl<V: VirtualActor> Core<V> {
    /// The key's slot, inserting one and starting its activation if the key has none;
    /// `creation` says the message that needs it declares the key new.
    fn slot_for(self: &Arc<Self>, key: &V::Key, creation: bool) -> Arc<Slot<V>> {
        if let Some(slot) = self.slots.get(key) {
            return Arc::clone(slot.value());
        }
        let slot = match self.slots.entry(key.clone()) {
            Entry::Occupied(entry) => return Arc::clone(entry.get()),
            Entry::Vacant(entry) => {
                let generation = self.next_generation();
                let shared = SlotShared::new(self.epoch, self.config.mailbox_capacity);
                let slot = Arc::new(Slot::new(generation, Arc::new(shared)));
                entry.insert(Arc::clone(&slot));
                slot
            }
        };
        activation::start(self, key.clone(), Arc::clone(&slot), creation);
        slot
    }

    /// Gets the message into the key's live actor (activating it, or waiting out a stop, as
    /// needed), then waits for the reply.
    ///
    /// The common case, a live actor with room, is sent here and now, and what is awaited is
    /// only the reply: a small future. Waiting for an activation or a stop is boxed, so its
    /// state (the message, kept for the next attempt) does not make every call's future, and
    /// every future that awaits it, a kilobyte larger and copied at each await.
    ///
    /// A message refused because its key is served elsewhere goes into `misplaced`, if given.
    fn deliver<'a, R: 'a>(
        self: &'a Arc<Self>,
        key: &'a V::Key,
        message: V::Message,
        reply: ReplyReceiver<R>,
        misplaced: MisplacedSlot<'a, V>,
    ) -> impl Future<Output = CallResult<R, V>> + 'a {
        match self.try_send(key, message) {
            Attempt::Sent(slot) => Either::Left(self.answer(key, Ok(slot), reply)),
            Attempt::Refused(error) => Either::Left(self.answer(key, Err(error), reply)),
            Attempt::Elsewhere(message) => {
                let error = not_local::<V>(key, message, misplaced);
                Either::Left(self.answer(key, Err(error), reply))
            }
            Attempt::Wait(message, slot, wait) => Either::Right(Box::pin(async move {
                let sent = self
                    .send_when_live(key, message, slot, wait, misplaced)
                    .await;
                self.answer(key, sent, reply).await
            })),
        }
    }

    /// One attempt, without waiting, to put `message` into the key's live actor.
    fn try_send(self: &Arc<Self>, key: &V::Key, message: V::Message) -> Attempt<V> {
        if self.is_shutting_down() {
            return Attempt::Refused(RuntimeError::ShuttingDown);
        }
        // Checked again on every attempt: a key can move away while its old actor drains.
        if !self.placement.is_local(key) {
            return Attempt::Elsewhere(message);
        }
        let slot = self.slot_for(key, V::is_creation(&message));
        let Some(actor) = slot.actor() else {
            return Attempt::Wait(message, slot, Await::Activation);
        };
        let Some(permit) = slot.shared.try_admit() else {
            self.counters.overloaded();
            return Attempt::Refused(RuntimeError::Overloaded {
                key: key.to_string(),
                capacity: slot.shared.capacity(),
            });
        };
        match actor.send_message(Envelope {
            message,
            permit,
            traffic: true,
        }) {
            Ok(()) => Attempt::Sent(slot),
            // Draining or stopped: wait until it is gone, then go again.
            Err(MessagingErr::SendErr(Envelope { message, .. })) => {
                Attempt::Wait(message, slot, Await::Stop)
            }
            Err(_) => Attempt::Refused(RuntimeError::ActorStopped {
                key: key.to_string(),
            }),
        }
    }

    /// Waits for what `wait` names, then attempts again, until the message is in a live
    /// actor's mailbox or refused.
    async fn send_when_live(
        self: &Arc<Self>,
        key: &V::Key,
        mut message: V::Message,
        mut slot: Arc<Slot<V>>,
        mut wait: Await,
        misplaced: MisplacedSlot<'_, V>,
    ) -> Result<Arc<Slot<V>>, RuntimeError<V::ActivationError>> {
        loop {
            match wait {
                Await::Stop => slot.stopped().await,
                Await::Activation => match slot.activated().await {
                    Phase::Failed(error) => return Err(RuntimeError::Activation(error)),
                    Phase::Broken => {
                        return Err(RuntimeError::ActorStopped {
                            key: key.to_string(),
                        });
                    }
                    Phase::Refused => return Err(RuntimeError::ShuttingDown),
                    Phase::Activating | Phase::Running | Phase::Stopped => {}
                },
            }
            match self.try_send(key, message) {
                Attempt::Sent(slot) => return Ok(slot),
                Attempt::Refused(error) => return Err(error),
                Attempt::Elsewhere(message) => return Err(not_local::<V>(key, message, misplaced)),
                Attempt::Wait(back, next, next_wait) => {
                    (message, slot, wait) = (back, next, next_wait)
                }
            }
        }
    }

    /// The reply to a message `sent` to the actor in its slot (or why it was not sent).
    async fn answer<R>(
        &self,
        key: &V::Key,
        sent: Result<Arc<Slot<V>>, RuntimeError<V::ActivationError>>,
        reply: ReplyReceiver<R>,
    ) -> CallResult<R, V> {
        let slot = sent?;
        match reply.answer().await {
            Some(Answer::Value(value)) => return Ok(value),
            Some(Answer::Abandoned) => {
                return Err(RuntimeError::Abandoned {
                    key: key.to_string(),
                });
            }
            Some(Answer::Panicked) => {
                // The handler panicked with our message. Answer once the crashed actor is gone,
                // so that this caller's next call reaches a fresh activation. (Bounded, in case
                // the handler caught the panic itself and the actor lives on.)
                let _ = tokio::time::timeout(CRASH_SETTLE, slot.stopped()).await;
            }
            None => {}
        }
        Err(RuntimeError::ActorStopped {
            key: key.to_string(),
        })
    }

    /// Asks every started actor to stop with `reason` and waits until they have.
    /// Asks every started actor whose key `matches` to stop with `reason` and waits until
    /// they have.
    async fn stop_matching(&self, reason: PassivationReason, matches: impl Fn(&V::Key) -> bool) {
        // Pairs with the fence after an actor starts (`Host::pre_start`): a caller that moved
        // the keys away before this call (a handoff drains its shard first) either finds the
        // actor here or the actor finds its key gone and stops itself.
        fence(Ordering::SeqCst);
        let slots: Vec<Arc<Slot<V>>> = self
            .slots
            .iter()
            .filter(|entry| matches(entry.key()))
            .map(|entry| Arc::clone(entry.value()))
            .filter(|slot| slot.request_stop(reason))
            .collect();
        futures::future::join_all(slots.iter().map(|slot| slot.stopped())).await;
    }
}

/// The refusal of a message whose key is served elsewhere, after putting the message into
/// `misplaced` when the caller keeps it.
fn not_local<V: VirtualActor>(
    key: &V::Key,
    message: V::Message,
    misplaced: MisplacedSlot<'_, V>,
) -> RuntimeError<V::ActivationError> {
    if let Some(slot) = misplaced {
        *slot = Some(Box::new(message));
    }
    RuntimeError::NotLocal {
        key: key.to_string(),
    }
}

impl<V: VirtualActor> Directory<V> {
    /// A directory where every key is local. Must be called inside a Tokio runtime: it spawns
    /// the idle sweeper there (without a runtime, idle passivation is disabled and an error is
    /// logged).
    pub fn new(context: Arc<V::Context>, config: RuntimeConfig) -> Self {
        Self::with_placement(context, config, Arc::new(LocalPlacement))
    }

    /// A directory that only serves the keys `placement` says are local; calls for other keys
    /// fail with [`RuntimeError::NotLocal`].
    pub fn with_placement(
        context: Arc<V::Context>,
        config: RuntimeConfig,
        placement: Arc<dyn Placement<V::Key>>,
    ) -> Self {
        let core = Arc::new(Core::new(context, config, placement));
        if let Some(idle_timeout) = core.config.idle_timeout {
            sweeper::spawn(&core, idle_timeout);
        }
        Self {
            handle: Arc::new(Handle { core }),
        }
    }

    fn core(&self) -> &Arc<Core<V>> {
        &self.handle.core
    }

    /// Sends the message built by `make` to the actor for `key` and waits for its reply, within
    /// [`RuntimeConfig::call_timeout`]. The actor is activated first if it is not live.
    pub async fn call<R: Send + 'static>(
        &self,
        key: &V::Key,
        make: impl FnOnce(Reply<R>) -> V::Message + Send,
    ) -> CallResult<R, V> {
        self.call_timeout(key, self.core().config.call_timeout, make)
            .await
    }

    /// Like [`call`](Directory::call) with an explicit timeout, which covers activation,
    /// queueing and handling. After [`RuntimeError::Timeout`] the message may still be handled.
    pub async fn call_timeout<R: Send + 'static>(
        &self,
        key: &V::Key,
        timeout: Duration,
        make: impl FnOnce(Reply<R>) -> V::Message + Send,
    ) -> CallResult<R, V> {
        self.call_within(key, timeout, make, None).await
    }

    /// Like [`call_timeout`](Directory::call_timeout), but a message refused because its key is
    /// not, or no longer, served here comes back as [`Misplaced`] instead of
    /// [`RuntimeError::NotLocal`], for the caller to send to the key's owner. That includes a
    /// message that waited here for an activation or a stop while the key moved away (a
    /// handoff): it reached no actor, so sending it on applies it once.
    pub async fn call_timeout_or_misplaced<R: Send + 'static>(
        &self,
        key: &V::Key,
        timeout: Duration,
        make: impl FnOnce(Reply<R>) -> V::Message + Send,
    ) -> Result<CallResult<R, V>, Misplaced<V::Message>> {
        let mut misplaced = None;
        let answer = self
            .call_within(key, timeout, make, Some(&mut misplaced))
            .await;
        match misplaced {
            Some(message) => Err(Misplaced(message)),
            None => Ok(answer),
        }
    }

    async fn call_within<R: Send + 'static>(
        &self,
        key: &V::Key,
        timeout: Duration,
        make: impl FnOnce(Reply<R>) -> V::Message + Send,
        misplaced: MisplacedSlot<'_, V>,
    ) -> CallResult<R, V> {
        let core = self.core();
        if core.is_shutting_down() {
            return Err(RuntimeError::ShuttingDown);
        }
        let (reply, answer) = Reply::channel();
        let message = make(reply);
        match core
            .deadlines
            .within(timeout, core.deliver(key, message, answer, misplaced))
            .await
        {
            Ok(result) => result,
            Err(_) => {
                core.counters.timed_out();
                Err(RuntimeError::Timeout {
                    key: key.to_string(),
                    after: timeout,
                })
            }
        }
    }

    /// Stops the actor for `key`: it handles what is already in its mailbox, runs
    /// [`VirtualActor::passivate`] with [`PassivationReason::Requested`] (unless another stop
    /// was already under way), and this waits until it has fully stopped. Returns `false` if
    /// the key had no started actor. The next call activates it again.
    pub async fn passivate(&self, key: &V::Key) -> bool {
        let Some(slot) = self.core().slots.get(key).map(|e| Arc::clone(e.value())) else {
            return false;
        };
        if !slot.request_stop(PassivationReason::Requested) {
            return false;
        }
        slot.stopped().await;
        true
    }

    /// [`passivate`](Directory::passivate) for every started actor, waiting for all of them.
    pub async fn passivate_all(&self) {
        self.core()
            .stop_matching(PassivationReason::Requested, |_| true)
            .await;
    }

    /// [`passivate`](Directory::passivate) for every started actor whose key `matches` (for
    /// example the keys of a shard that moves to another node), waiting for all of them.
    pub async fn passivate_matching(&self, matches: impl Fn(&V::Key) -> bool) {
        self.core()
            .stop_matching(PassivationReason::Requested, matches)
            .await;
    }

    /// `true` if `key` has a started actor (possibly finishing its mailbox before a stop).
    pub fn is_live(&self, key: &V::Key) -> bool {
        self.core()
            .slots
            .get(key)
            .is_some_and(|slot| slot.actor().is_some())
    }

    /// How many messages wait in the mailbox of the actor for `key` (not counting the one being
    /// handled); `None` if the key has no started actor.
    pub fn mailbox_len(&self, key: &V::Key) -> Option<usize> {
        let slot = self.core().slots.get(key)?;
        slot.actor().map(|_| slot.shared.mailbox_len())
    }

    /// Live actors: counted from the start of their activation until fully stopped.
    pub fn live_count(&self) -> usize {
        self.core().counters.live()
    }

    /// A snapshot of this directory's counters.
    pub fn stats(&self) -> RuntimeStats {
        self.core().counters.snapshot()
    }

    /// Shuts down gracefully: from now on calls fail at once with
    /// [`RuntimeError::ShuttingDown`]; every actor handles the messages already accepted into
    /// its mailbox, then runs [`VirtualActor::passivate`] with [`PassivationReason::Shutdown`];
    /// this waits for all of them, at most [`RuntimeConfig::shutdown_timeout`], after which
    /// the remaining actors are killed (their pending callers get
    /// [`RuntimeError::ActorStopped`]). Idempotent.
    pub async fn shutdown(&self) {
        let core = self.core();
        core.begin_shutdown();
        let deadline = instant_after(tokio::time::Instant::now(), core.config.shutdown_timeout);
        // Activations already under way stop their actor themselves; loop until none is left.
        let all_stopped = async {
            loop {
                let slots: Vec<Arc<Slot<V>>> =
                    core.slots.iter().map(|e| Arc::clone(e.value())).collect();
                if slots.is_empty() {
                    break;
                }
                for slot in &slots {
                    slot.request_stop(PassivationReason::Shutdown);
                }
                futures::future::join_all(slots.iter().map(|slot| slot.stopped())).await;
            }
        };
        let finished = tokio::time::timeout_at(deadline, all_stopped).await.is_ok();
        if !finished {
            tracing::warn!(
                actor = core.actor_name,
                remaining = core.slots.len(),
                timeout = ?core.config.shutdown_timeout,
                "actors did not stop within the shutdown timeout; killing them"
            );
            for entry in &core.slots {
                if let Some(actor) = entry.value().actor() {
                    actor.kill();
                }
            }
        }
    }

    /// `true` once [`shutdown`](Directory::shutdown) has begun (or the last handle was dropped).
    pub fn is_shut_down(&self) -> bool {
        self.core().is_shutting_down()
    }

    /// The shared context handed to every activation.
    pub fn context(&self) -> &Arc<V::Context> {
        &self.core().context
    }

    /// Where this directory's keys are served.
    pub fn placement(&self) -> &Arc<dyn Placement<V::Key>> {
        &self.core().placement
    }

    /// The configuration in effect (limits below 1 raised to 1).
    pub fn config(&self) -> &RuntimeConfig {
        &self.core().config
    }
}

impl<V: VirtualActor> Clone for Directory<V> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<V: VirtualActor> fmt::Debug for Directory<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.core();
        f.debug_struct("Directory")
            .field("actor", &core.actor_name)
            .field("live", &core.counters.live())
            .field("shutting_down", &core.is_shutting_down())
            .finish_non_exhaustive()
    }
}
