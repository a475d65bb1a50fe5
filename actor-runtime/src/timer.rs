//! Timers: a live actor sends itself a message later, or every so often.
//!
//! A timer belongs to one activation. Its messages go through the actor's own mailbox (so they
//! are handled one at a time with everything else), but they are not traffic: handling one does
//! not make the actor look recently used, so a ticking timer never keeps an otherwise idle actor
//! alive (Orleans' timers behave the same by default). A tick that finds the mailbox full is
//! skipped, not queued. When the actor stops (passivation, eviction, a panic) its timers end:
//! their ticks are refused by the stopping mailbox. Dropping a [`TimerHandle`] cancels a timer,
//! but a tick already on its way may still arrive, so an actor that cancels or replaces timers
//! should recognise stale ticks (by an id in the message, say).
//!
//! Timers are not durable: nothing about them is stored. For work that must survive a restart,
//! store the intent (an event, a reminder) instead.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::VirtualActor;
use crate::deadlines::instant_after;
use crate::slot::{Envelope, SlotShared};

/// What an actor uses to send messages to itself later: handed to it by
/// [`VirtualActor::attach_timers`] once it is activated.
pub struct Timers<V: VirtualActor> {
    actor: ActorRef<Envelope<V>>,
    shared: Arc<SlotShared>,
}

impl<V: VirtualActor> Timers<V> {
    pub(crate) fn new(actor: ActorRef<Envelope<V>>, shared: Arc<SlotShared>) -> Self {
        Self { actor, shared }
    }

    /// Sends `message` to the actor after `delay`, unless the returned handle is dropped or
    /// cancelled first, or the actor has stopped.
    pub fn send_after(&self, delay: Duration, message: V::Message) -> TimerHandle {
        let sender = self.sender();
        TimerHandle(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            sender.send(message);
        }))
    }

    /// Sends `make()` to the actor every `period` (first after one `period`) until the returned
    /// handle is dropped or cancelled, or the actor stops. Ticks missed while the runtime was
    /// busy are skipped, not sent in a burst. A zero `period` is taken as one millisecond; one
    /// too long to add to the clock (`Duration::MAX`, say) as never.
    pub fn send_every<F>(&self, period: Duration, make: F) -> TimerHandle
    where
        F: Fn() -> V::Message + Send + 'static,
    {
        let sender = self.sender();
        let period = period.max(Duration::from_millis(1));
        TimerHandle(tokio::spawn(async move {
            // The period may come from user input: `now + period` would panic on overflow.
            let first = instant_after(tokio::time::Instant::now(), period);
            let mut ticks = tokio::time::interval_at(first, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                if !sender.send(make()) {
                    return;
                }
            }
        }))
    }

    fn sender(&self) -> Sender<V> {
        Sender {
            actor: self.actor.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<V: VirtualActor> std::fmt::Debug for Timers<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

/// The sending half a timer task owns.
struct Sender<V: VirtualActor> {
    actor: ActorRef<Envelope<V>>,
    shared: Arc<SlotShared>,
}

impl<V: VirtualActor> Sender<V> {
    /// Puts `message` in the mailbox as a timer message. `false` once the actor has stopped or
    /// is stopping (the timer is over); a full mailbox skips this tick only.
    fn send(&self, message: V::Message) -> bool {
        if self.shared.stop_reason().is_some() {
            return false;
        }
        let Some(permit) = self.shared.try_admit() else {
            crate::stats::timer_tick_skipped();
            return true;
        };
        self.actor
            .send_message(Envelope {
                message,
                permit,
                traffic: false,
            })
            .is_ok()
    }
}

/// A running timer. Dropping it, or [`cancel`](TimerHandle::cancel), stops it; only a tick
/// already being sent at that moment can still arrive.
#[derive(Debug)]
pub struct TimerHandle(JoinHandle<()>);

impl TimerHandle {
    /// Stops the timer.
    pub fn cancel(self) {}

    /// Whether the timer has ended by itself (a one-shot timer that fired, or a timer whose
    /// actor stopped).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for TimerHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}
