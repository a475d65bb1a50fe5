//! One activation of one key: its state machine, its mailbox accounting and its stop request.
//!
//! The directory maps each key to at most one [`Slot`]. A slot is inserted (in
//! [`Phase::Activating`]) only when the key has none, and removed only after its actor has fully
//! stopped, so there is never more than one live actor per key. Callers that find a slot which
//! is activating or stopping wait on its phase and then look the key up again. The phase sits
//! under a small lock beside a `Notify`, and a waiter registers before it looks, so no wake-up
//! is lost; that costs a few dozen bytes per live actor where a `watch` channel cost hundreds.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
};
use std::time::Instant;

use std::sync::{Mutex, PoisonError};

use ractor::ActorRef;
use tokio::sync::Notify;

use crate::{PassivationReason, VirtualActor};

/// What travels through the ractor mailbox: the user's message and its mailbox place.
pub(crate) struct Envelope<V: VirtualActor> {
    pub(crate) message: V::Message,
    pub(crate) permit: MailboxPermit,
    /// A caller's message (not a timer's): handling it counts as use for idle passivation.
    pub(crate) traffic: bool,
}

/// Where one activation is in its life.
#[derive(Debug)]
pub(crate) enum Phase<E> {
    /// Waiting for capacity or running `activate`.
    Activating,
    /// The actor is up (it may be draining towards a stop).
    Running,
    /// `activate` returned this error.
    Failed(Arc<E>),
    /// `activate` panicked, or the activation could not be started at all.
    Broken,
    /// The directory was shutting down before the actor started.
    Refused,
    /// The actor has fully stopped and its slot is gone from the directory.
    Stopped,
}

impl<E> Clone for Phase<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Activating => Self::Activating,
            Self::Running => Self::Running,
            Self::Failed(e) => Self::Failed(Arc::clone(e)),
            Self::Broken => Self::Broken,
            Self::Refused => Self::Refused,
            Self::Stopped => Self::Stopped,
        }
    }
}

impl<E> Phase<E> {
    fn is_terminal(&self) -> bool {
        !matches!(self, Self::Activating | Self::Running)
    }
}

/// Milliseconds from `epoch` to now.
pub(crate) fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The part of a slot the hosted actor also sees: mailbox accounting, recency, stop request.
#[derive(Debug)]
pub(crate) struct SlotShared {
    epoch: Instant,
    capacity: usize,
    /// Messages admitted and waiting in the mailbox (not counting the one in `handle`).
    in_mailbox: AtomicUsize,
    /// A message is in `handle`.
    busy: AtomicBool,
    /// Milliseconds since `epoch` at activation or when the last message was handled.
    last_used: AtomicU64,
    /// 0 = no stop requested, otherwise [`PassivationReason::to_u8`].
    stop_reason: AtomicU8,
    /// Set once `passivate` has returned: the actor stopped normally.
    passivated: AtomicBool,
}

impl SlotShared {
    pub(crate) fn new(epoch: Instant, capacity: usize) -> Self {
        Self {
            epoch,
            capacity,
            in_mailbox: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            last_used: AtomicU64::new(millis_since(epoch)),
            stop_reason: AtomicU8::new(0),
            passivated: AtomicBool::new(false),
        }
    }

    /// Messages waiting in the mailbox.
    pub(crate) fn mailbox_len(&self) -> usize {
        self.in_mailbox.load(Ordering::Acquire)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes one mailbox place, or `None` if the mailbox is full.
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<MailboxPermit> {
        let admitted = self
            .in_mailbox
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| MailboxPermit {
            shared: Arc::clone(self),
        })
    }

    pub(crate) fn touch(&self) {
        self.last_used
            .store(millis_since(self.epoch), Ordering::Release);
    }

    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Acquire)
    }

    /// Marks a message as taken out of the mailbox and being handled.
    pub(crate) fn begin_handling(&self) {
        self.busy.store(true, Ordering::Release);
    }

    /// Marks the end of `handle`; `traffic` counts it as use (a timer's message does not).
    pub(crate) fn end_handling(&self, traffic: bool) {
        if traffic {
            self.touch();
        }
        self.busy.store(false, Ordering::Release);
    }

    /// Nothing queued or in progress, and no stop requested yet.
    pub(crate) fn is_quiet(&self) -> bool {
        self.in_mailbox.load(Ordering::Acquire) == 0
            && !self.busy.load(Ordering::Acquire)
            && self.stop_reason.load(Ordering::Acquire) == 0
    }

    /// Records `reason` as the stop reason if none was recorded yet; `true` if this call did.
    pub(crate) fn claim_stop(&self, reason: PassivationReason) -> bool {
        self.stop_reason
            .compare_exchange(0, reason.to_u8(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn stop_reason(&self) -> Option<PassivationReason> {
        PassivationReason::from_u8(self.stop_reason.load(Ordering::Acquire))
    }

    pub(crate) fn mark_passivated(&self) {
        self.passivated.store(true, Ordering::Release);
    }

    pub(crate) fn was_passivated(&self) -> bool {
        self.passivated.load(Ordering::Acquire)
    }
}

/// One mailbox place, carried inside the message and given back when the message leaves the
/// mailbox: when `handle` starts (after the actor is marked busy), or when it is dropped unhandled.
#[derive(Debug)]
pub(crate) struct MailboxPermit {
    shared: Arc<SlotShared>,
}

impl Drop for MailboxPermit {
    fn drop(&mut self) {
        self.shared.in_mailbox.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One activation of one key.
pub(crate) struct Slot<V: VirtualActor> {
    pub(crate) generation: u64,
    pub(crate) shared: Arc<SlotShared>,
    actor: OnceLock<ActorRef<Envelope<V>>>,
    phase: Mutex<Phase<V::ActivationError>>,
    phase_changed: Notify,
}

impl<V: VirtualActor> Slot<V> {
    pub(crate) fn new(generation: u64, shared: Arc<SlotShared>) -> Self {
        Self {
            generation,
            shared,
            actor: OnceLock::new(),
            phase: Mutex::new(Phase::Activating),
            phase_changed: Notify::new(),
        }
    }

    /// The actor, once it has started.
    pub(crate) fn actor(&self) -> Option<&ActorRef<Envelope<V>>> {
        self.actor.get()
    }

    pub(crate) fn set_running(&self, actor: ActorRef<Envelope<V>>) {
        // A slot is activated once; a second set cannot happen and would be ignored.
        let _ = self.actor.set(actor);
        self.set_phase(Phase::Running);
    }

    pub(crate) fn set_phase(&self, phase: Phase<V::ActivationError>) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase;
        self.phase_changed.notify_waiters();
    }

    /// Waits until the phase satisfies `done` and returns it.
    async fn phase_where(
        &self,
        done: impl Fn(&Phase<V::ActivationError>) -> bool,
    ) -> Phase<V::ActivationError> {
        loop {
            let changed = self.phase_changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change after the look still wakes us.
            changed.as_mut().enable();
            {
                let phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
                if done(&phase) {
                    return phase.clone();
                }
            }
            changed.await;
        }
    }

    /// Asks the actor to stop after the messages already in its mailbox, recording `reason`
    /// unless another stop was requested first. `false` if the actor has not started.
    pub(crate) fn request_stop(&self, reason: PassivationReason) -> bool {
        let Some(actor) = self.actor() else {
            return false;
        };
        self.shared.claim_stop(reason);
        // An error means the actor is already stopping or stopped, which is what we want.
        let _ = actor.drain();
        true
    }

    /// Waits until the activation has an outcome (anything but `Activating`).
    pub(crate) async fn activated(&self) -> Phase<V::ActivationError> {
        self.phase_where(|p| !matches!(p, Phase::Activating)).await
    }

    /// Waits until the actor is fully stopped and the slot has left the directory.
    pub(crate) async fn stopped(&self) {
        self.phase_where(Phase::is_terminal).await;
    }
}
