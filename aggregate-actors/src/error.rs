//! Errors callers of the executor see.

use std::sync::Arc;
use std::time::Duration;

use event_stores::{InvalidInput, StoreError, StreamId};

use crate::codec::CodecError;

/// Why an actor could not be activated (its state could not be rebuilt).
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The event store failed (see [`StoreError::is_retryable`]).
    #[error("could not load {stream}: {source}")]
    Store {
        /// The stream being loaded.
        stream: StreamId,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A stored event could not be decoded: events are the source of truth, so this is not
    /// skipped the way a bad snapshot is.
    #[error("event {version} of {stream} cannot be decoded: {source}")]
    CorruptEvent {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: u64,
        /// What went wrong.
        #[source]
        source: CodecError,
    },
    /// The id does not make a valid stream name.
    #[error(transparent)]
    InvalidId(#[from] InvalidInput),
}

impl ActivationError {
    /// True when the store was unreachable, so a later call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ActivationError::Store { source, .. } if source.is_retryable())
    }
}

/// Everything that can go wrong in the executor, apart from a command's domain rejection.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The aggregate type was never registered with this executor.
    #[error("aggregate type {0:?} is not registered with this executor")]
    UnknownAggregateType(&'static str),
    /// Bad input (empty or oversized id, oversized payload, …): nothing was stored.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// The aggregate has no events.
    #[error("aggregate {aggregate_type}/{id} not found")]
    NotFound {
        /// The aggregate type.
        aggregate_type: &'static str,
        /// The id asked for.
        id: String,
    },
    /// Another writer kept winning: the command was retried `retries` times on fresh state
    /// and still conflicted. Nothing was stored for it.
    #[error(
        "version conflict on {stream} after {retries} retries (expected {expected}, actual {actual})"
    )]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// Retries made.
        retries: u32,
        /// The version the last attempt expected.
        expected: u64,
        /// The version found.
        actual: u64,
    },
    /// The event or snapshot store failed. Nothing was stored for the command.
    #[error("store error: {0}")]
    Store(StoreError),
    /// An event could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(#[from] CodecError),
    /// The actor could not be activated.
    #[error("activation failed: {0}")]
    Activation(Arc<ActivationError>),
    /// The aggregate's mailbox is full; try again later.
    #[error("aggregate {id} is overloaded (mailbox of {capacity} is full)")]
    Overloaded {
        /// The aggregate id.
        id: String,
        /// The mailbox capacity.
        capacity: usize,
    },
    /// No reply in time. The command may still be carried out.
    #[error("no reply from aggregate {id} within {after:?}; the command may still complete")]
    Timeout {
        /// The aggregate id.
        id: String,
        /// The timeout.
        after: Duration,
    },
    /// The actor stopped (user code panicked) before answering. Nothing was stored for the
    /// command; the next call re-activates the aggregate from the store.
    #[error("aggregate {id} stopped before answering (user code panicked); nothing was stored")]
    ActorStopped {
        /// The aggregate id.
        id: String,
    },
    /// The executor is shutting down or shut down.
    #[error("the executor is shut down")]
    ShuttingDown,
    /// The aggregate lives on another node.
    #[error("aggregate {id} is placed on another node")]
    NotLocal {
        /// The aggregate id.
        id: String,
    },
    /// Reconstruction asked for a version the stream has not reached.
    #[error("version {requested} requested, but the stream is at version {current}")]
    VersionNotReached {
        /// The version asked for.
        requested: u64,
        /// The stream's version.
        current: u64,
    },
}

impl ExecutorError {
    /// True when the same call may succeed later unchanged: the store was unreachable, the
    /// mailbox was full, or another writer won a race.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecutorError::Store(e) => e.is_retryable(),
            ExecutorError::Activation(e) => e.is_retryable(),
            ExecutorError::Overloaded { .. }
            | ExecutorError::Conflict { .. }
            | ExecutorError::ActorStopped { .. } => true,
            _ => false,
        }
    }
}

impl From<StoreError> for ExecutorError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidInput(input) => ExecutorError::InvalidInput(input),
            other => ExecutorError::Store(other),
        }
    }
}

impl From<actor_runtime::RuntimeError<ActivationError>> for ExecutorError {
    fn from(error: actor_runtime::RuntimeError<ActivationError>) -> Self {
        use actor_runtime::RuntimeError as R;
        match error {
            R::Activation(e) => match &*e {
                ActivationError::InvalidId(input) => ExecutorError::InvalidInput(input.clone()),
                _ => ExecutorError::Activation(e),
            },
            R::Overloaded { key, capacity } => ExecutorError::Overloaded { id: key, capacity },
            R::Timeout { key, after } => ExecutorError::Timeout { id: key, after },
            R::ActorStopped { key } => ExecutorError::ActorStopped { id: key },
            R::ShuttingDown => ExecutorError::ShuttingDown,
            R::NotLocal { key } => ExecutorError::NotLocal { id: key },
        }
    }
}

/// Why a command failed: the aggregate rejected it, or the executor could not carry it out.
/// Either way nothing was stored for it (except after [`ExecutorError::Timeout`], whose outcome
/// is unknown).
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate's `decide` rejected the command.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// The executor could not carry the command out.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// The domain error, if the command was rejected by the aggregate.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            CommandError::Rejected(e) => Some(e),
            CommandError::Executor(_) => None,
        }
    }

    /// True when retrying the same command later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CommandError::Executor(e) if e.is_retryable())
    }
}

impl<E: std::error::Error + 'static> From<StoreError> for CommandError<E> {
    fn from(error: StoreError) -> Self {
        CommandError::Executor(error.into())
    }
}

impl<E: std::error::Error + 'static> From<CodecError> for CommandError<E> {
    fn from(error: CodecError) -> Self {
        CommandError::Executor(error.into())
    }
}
