//! The [`VirtualActor`] trait: what a user implements, and why an actor stopped.

use std::{fmt, future::Future, hash::Hash, sync::Arc};

/// What a virtual actor is: its whole lifecycle in one trait.
///
/// A virtual actor is addressed by a [`Key`](VirtualActor::Key) and always "exists": the
/// [`Directory`](crate::Directory) activates it on the first message for its key, keeps at most
/// one live activation per key, and passivates it when it is idle, evicted, asked to stop or the
/// directory shuts down. Messages are handled one at a time, in mailbox order.
///
/// Implement the methods as `async fn`s: the trait declares them as functions returning a `Send`
/// future, with no `async_trait` macro to add. The host boxes `handle`'s future for each message
/// itself, so that an idle actor's task stays small whatever the handler's future holds.
pub trait VirtualActor: Sized + Send + 'static {
    /// The identity of an actor. Exactly one activation per key is live at a time.
    type Key: Clone + Eq + Hash + Send + Sync + fmt::Debug + fmt::Display + 'static;
    /// What the actor receives. Requests that need an answer carry a [`Reply`](crate::Reply).
    type Message: Send + 'static;
    /// Shared dependencies handed to every activation (stores, configuration, …).
    type Context: Send + Sync + 'static;
    /// Why [`activate`](VirtualActor::activate) can fail.
    type ActivationError: std::error::Error + Send + Sync + 'static;

    /// Builds the actor for `key`. Runs in the new actor before its first message (ractor's
    /// `pre_start`). An error means no actor: every caller waiting on this activation gets
    /// [`RuntimeError::Activation`](crate::RuntimeError::Activation) with the same `Arc`, and the
    /// next call tries again.
    fn activate(
        key: &Self::Key,
        context: &Arc<Self::Context>,
    ) -> impl Future<Output = Result<Self, Self::ActivationError>> + Send;

    /// Whether `first`, the message whose arrival starts an activation, declares its key new
    /// (a creation command, say). If so the runtime builds the actor with
    /// [`activate_new`](VirtualActor::activate_new) instead of
    /// [`activate`](VirtualActor::activate). Asked only when a call finds no actor for its key.
    fn is_creation(_first: &Self::Message) -> bool {
        false
    }

    /// Builds the actor for a key whose first message says it is new, so an actor that loads
    /// state in [`activate`](VirtualActor::activate) may skip the load. The message is a hint:
    /// the actor must still find out, and cope, when the key was not new after all. Defaults
    /// to [`activate`](VirtualActor::activate).
    fn activate_new(
        key: &Self::Key,
        context: &Arc<Self::Context>,
    ) -> impl Future<Output = Result<Self, Self::ActivationError>> + Send {
        Self::activate(key, context)
    }

    /// Handles one message. Calls never overlap for one actor; they run in mailbox order.
    /// A panic here stops the actor (without [`passivate`](VirtualActor::passivate)); its
    /// unanswered callers get [`RuntimeError::ActorStopped`](crate::RuntimeError::ActorStopped).
    fn handle(&mut self, message: Self::Message) -> impl Future<Output = ()> + Send;

    /// Hands a freshly activated actor its [`Timers`](crate::Timers), through which it can
    /// send itself messages later. Called once, right after `activate` succeeded and before
    /// the first message. The default drops them: an actor that never needs a timer pays
    /// nothing.
    fn attach_timers(&mut self, _timers: crate::Timers<Self>) {}

    /// Asked after each handled message: `true` passivates the actor (after the messages
    /// already in its mailbox, with [`PassivationReason::Requested`]). For an actor that turned
    /// out to hold nothing worth keeping, e.g. an aggregate with no events after a refused
    /// first command, so unknown keys leave nothing behind.
    fn should_passivate(&self) -> bool {
        false
    }

    /// Runs once when the actor stops normally (idle, evicted, requested, shutdown), after every
    /// message accepted before the stop was handled. It does not run after a panic.
    fn passivate(&mut self, _reason: PassivationReason) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Why an actor is being passivated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PassivationReason {
    /// It received no message for [`RuntimeConfig::idle_timeout`](crate::RuntimeConfig::idle_timeout).
    Idle,
    /// It was the least recently used actor when a new activation needed room under
    /// [`RuntimeConfig::max_live_actors`](crate::RuntimeConfig::max_live_actors).
    Evicted,
    /// [`Directory::passivate`](crate::Directory::passivate) or
    /// [`Directory::passivate_all`](crate::Directory::passivate_all) asked for it.
    Requested,
    /// The directory is shutting down (or its last handle was dropped).
    Shutdown,
}

impl PassivationReason {
    /// A short lowercase name, used as the `reason` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Evicted => "evicted",
            Self::Requested => "requested",
            Self::Shutdown => "shutdown",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Idle => 1,
            Self::Evicted => 2,
            Self::Requested => 3,
            Self::Shutdown => 4,
        }
    }

    pub(crate) fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Idle),
            2 => Some(Self::Evicted),
            3 => Some(Self::Requested),
            4 => Some(Self::Shutdown),
            _ => None,
        }
    }
}

impl fmt::Display for PassivationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
