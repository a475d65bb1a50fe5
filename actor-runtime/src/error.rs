//! [`RuntimeError`]: why a call did not get its answer.

use std::{sync::Arc, time::Duration};

/// Why a [`Directory::call`](crate::Directory::call) did not get its answer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError<E: std::error::Error + 'static> {
    /// [`VirtualActor::activate`](crate::VirtualActor::activate) failed. Every caller that was
    /// waiting on that activation gets the same `Arc`. Nothing stays live; the next call retries.
    #[error("actor activation failed: {0}")]
    Activation(Arc<E>),
    /// The actor's mailbox is full ([`RuntimeConfig::mailbox_capacity`](crate::RuntimeConfig::mailbox_capacity)).
    /// The message was not delivered.
    #[error("actor {key} is overloaded: its mailbox holds {capacity} messages")]
    Overloaded {
        /// The actor's key, as displayed.
        key: String,
        /// The mailbox capacity that was reached.
        capacity: usize,
    },
    /// No reply within the call's timeout. The message may still be processed.
    #[error("no reply from actor {key} within {after:?}; the message may still be processed")]
    Timeout {
        /// The actor's key, as displayed.
        key: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The actor stopped before answering: it panicked (in `handle`, or in `activate`), or it
    /// dropped the [`Reply`](crate::Reply) unanswered.
    #[error("actor {key} stopped before replying")]
    ActorStopped {
        /// The actor's key, as displayed.
        key: String,
    },
    /// The actor stopped while handling the message (it was killed, e.g. at the end of a
    /// shutdown timeout): the handler started and did not finish, so its effects are unknown.
    #[error("actor {key} stopped while handling the message")]
    Abandoned {
        /// The actor's key, as displayed.
        key: String,
    },
    /// The directory is shutting down or shut down; the message was not delivered.
    #[error("the actor directory is shutting down")]
    ShuttingDown,
    /// [`Placement`](crate::Placement) puts this key on another node.
    #[error("actor {key} is not placed on this node")]
    NotLocal {
        /// The actor's key, as displayed.
        key: String,
    },
}

impl<E: std::error::Error + 'static> Clone for RuntimeError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Activation(e) => Self::Activation(Arc::clone(e)),
            Self::Overloaded { key, capacity } => Self::Overloaded {
                key: key.clone(),
                capacity: *capacity,
            },
            Self::Timeout { key, after } => Self::Timeout {
                key: key.clone(),
                after: *after,
            },
            Self::ActorStopped { key } => Self::ActorStopped { key: key.clone() },
            Self::Abandoned { key } => Self::Abandoned { key: key.clone() },
            Self::ShuttingDown => Self::ShuttingDown,
            Self::NotLocal { key } => Self::NotLocal { key: key.clone() },
        }
    }
}
