//! Errors callers of the executor see.

use std::sync::Arc;
use std::time::Duration;

use event_stores::{InvalidInput, StoreError, StreamId};

use crate::codec::CodecError;
use crate::command::CommandId;
use crate::upcast::UpcastError;

/// Why an actor could not be activated (its state could not be rebuilt).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A stored event could not be read as the current event type (undecodable, or no
    /// [upcaster](crate::upcast) chain lifts its schema version): events are the source of truth,
    /// so this is not skipped the way a bad snapshot is.
    #[error(
        "event {version} of {stream} ({event_type}, event schema {schema_version}) cannot be read: {source}"
    )]
    CorruptEvent {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: u64,
        /// The event's stored type name.
        event_type: String,
        /// The event schema version it was stored with.
        schema_version: u32,
        /// What went wrong.
        #[source]
        source: UpcastError,
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
#[non_exhaustive]
pub enum ExecutorError {
    /// The aggregate type was never registered with this executor.
    #[error("aggregate type {0:?} is not registered with this executor")]
    UnknownAggregateType(&'static str),
    /// The type has no snapshot archive ([`AggregateSettings::archive`](crate::AggregateSettings::archive)).
    #[error("aggregate type {aggregate_type:?} has no snapshot archive")]
    NoArchive {
        /// The type.
        aggregate_type: &'static str,
    },
    /// The archive holds no snapshot of the aggregate at that version.
    #[error("no archived snapshot of {aggregate_type}/{id} at version {version}")]
    NotArchived {
        /// The type.
        aggregate_type: &'static str,
        /// The aggregate.
        id: String,
        /// The version asked for.
        version: u64,
    },
    /// The archived snapshot would not open (damaged, another schema, its base missing), so
    /// it was left where it was.
    #[error("the archived snapshot at version {version} cannot be restored: {reason}")]
    CannotRestore {
        /// The version.
        version: u64,
        /// Why it does not open.
        reason: String,
    },
    /// No aggregate type of this name is registered with this executor (asked by name, e.g.
    /// from a stored schedule or the command line).
    #[error("no aggregate type named {aggregate_type:?} is registered with this executor")]
    TypeNotServed {
        /// The name asked for.
        aggregate_type: String,
    },
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
    /// No reply in time. For a command this is an [`CommandError::Indeterminate`] outcome:
    /// it may still be carried out.
    #[error("no reply from aggregate {id} within {after:?}; the command may still complete")]
    Timeout {
        /// The aggregate id.
        id: String,
        /// The timeout.
        after: Duration,
    },
    /// The actor stopped before the call's message was handled (user code panicked with this
    /// or an earlier message, before anything was appended). Nothing was stored for it; the
    /// next call re-activates the aggregate from the store.
    #[error("aggregate {id} stopped before answering (user code panicked); nothing was stored")]
    ActorStopped {
        /// The aggregate id.
        id: String,
    },
    /// The actor was stopped (killed at the end of a shutdown timeout) while handling the
    /// message. For a command this is an [`CommandError::Indeterminate`] outcome.
    #[error("aggregate {id} was stopped while handling the call; its outcome is unknown")]
    Abandoned {
        /// The aggregate id.
        id: String,
    },
    /// The command's deadline passed, or its caller went away, before it was started: it was
    /// dropped before `decide` and stored nothing.
    #[error("command {command_id} to aggregate {id} expired before it started; nothing was stored")]
    Expired {
        /// The aggregate id.
        id: String,
        /// The command.
        command_id: CommandId,
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
    /// Another node answered a forwarded call with an error, or could not be reached.
    ///
    /// Whether the call may have been carried out there although it failed here: the transport
    /// tells the first two cases apart (it reports a call as unreachable only when it certainly
    /// was not sent, and as lost whenever it may have been; see `cluster`'s `HttpTransport`),
    /// the third is the owner's own answer.
    ///
    /// | when | carried out there? | a command | a snapshot request |
    /// |---|---|---|---|
    /// | [`not_delivered`](Self::not_delivered) | no | not stored: retry freely | not written |
    /// | [`answer_lost`](Self::answer_lost) | perhaps | indeterminate: retry with the same command id | perhaps written |
    /// | [`owner_answered`](Self::owner_answered) | as the owner's answer says | as the answer says (`kind`, `retryable`) | as the answer says |
    #[error("node {node}: {kind}: {message}")]
    Remote {
        /// The node's address.
        node: String,
        /// What kind of failure: the owner's own (`conflict`, `overloaded`, `expired`,
        /// `failed`, …), or what happened on the way (`unreachable`, `not_owner`, `lost`,
        /// `bad_answer`).
        kind: String,
        /// Its description.
        message: String,
        /// Whether the same call may succeed later.
        retryable: bool,
    },
    /// A command scheduled or cancelled a reminder, but reminders are not turned on for its
    /// type ([`AggregateSettings::reminders`](crate::AggregateSettings::reminders)). Nothing
    /// was stored.
    #[error("aggregate type {aggregate_type:?} does not have reminders turned on")]
    RemindersOff {
        /// The aggregate type.
        aggregate_type: &'static str,
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
    /// mailbox was full, another writer won a race, the deadline passed or no answer came.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecutorError::Store(e) => e.is_retryable(),
            ExecutorError::Activation(e) => e.is_retryable(),
            ExecutorError::Overloaded { .. }
            | ExecutorError::Conflict { .. }
            | ExecutorError::ActorStopped { .. }
            | ExecutorError::Abandoned { .. }
            | ExecutorError::Expired { .. }
            | ExecutorError::NotLocal { .. }
            | ExecutorError::Timeout { .. } => true,
            ExecutorError::Remote { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// How far a call forwarded to another node got, as far as this node can tell (see
/// [`ExecutorError::not_delivered`], [`ExecutorError::answer_lost`] and
/// [`ExecutorError::owner_answered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// It certainly did not reach a node that would carry it out.
    NotDelivered,
    /// It was sent, but no readable answer came back: it may have been carried out there.
    MayHaveArrived,
    /// The owner received it and answered with this error.
    Answered,
}

/// Whether a forwarded call may have been carried out where it was sent (see
/// [`ExecutorError::Remote`]). Each is false for every error but `Remote`: those of this node,
/// and owners' answers that read as this node's own (such as [`ExecutorError::NotFound`]).
impl ExecutorError {
    /// How far a forwarded call got; `None` for any error but [`Remote`](Self::Remote).
    pub fn delivery(&self) -> Option<Delivery> {
        match self {
            ExecutorError::Remote { kind, .. } => Some(crate::remote::delivery_of(kind)),
            _ => None,
        }
    }

    /// True when this is a call forwarded to another node that certainly did not reach a node
    /// that would carry it out: it was never sent (no connection could be made, the address is
    /// unusable, no time was left), or the node it reached does not serve the aggregate and
    /// refused it unread. Nothing happened there.
    pub fn not_delivered(&self) -> bool {
        self.delivery() == Some(Delivery::NotDelivered)
    }

    /// True when this is a call forwarded to another node that was sent but whose answer was
    /// lost or unreadable (the connection broke, the call timed out, the answer did not decode
    /// or was not the one asked for): it may have arrived and been carried out there (a
    /// command stored, a snapshot written) without this node learning of it.
    pub fn answer_lost(&self) -> bool {
        self.delivery() == Some(Delivery::MayHaveArrived)
    }

    /// True when this is the answer of the node a call was forwarded to: it received the call
    /// and failed it, and what happened there is what this error says (its `kind` and
    /// `retryable`).
    pub fn owner_answered(&self) -> bool {
        self.delivery() == Some(Delivery::Answered)
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
            R::Abandoned { key } => ExecutorError::Abandoned { id: key },
            R::ShuttingDown => ExecutorError::ShuttingDown,
            R::NotLocal { key } => ExecutorError::NotLocal { id: key },
        }
    }
}

/// Why a command failed, split by what the caller knows about the store afterwards:
///
/// | variant | stored? | what to do |
/// |---|---|---|
/// | [`Rejected`](Self::Rejected) | nothing | the domain said no; retrying the same command gets the same answer unless the state changes |
/// | [`NotStored`](Self::NotStored) | nothing | retry if [`is_retryable`](Self::is_retryable) (overloaded, unavailable, conflict, expired), else fix the input |
/// | [`Indeterminate`](Self::Indeterminate) | maybe | retry with **the same command id** ([`Indeterminate::command_id`]): if the first attempt was stored you get its original outcome, flagged as a duplicate; otherwise it is applied now — exactly once either way |
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate's `decide` rejected the command. Nothing was stored.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// The executor could not carry the command out, and nothing was stored for it.
    #[error(transparent)]
    NotStored(#[from] ExecutorError),
    /// The command may or may not have been stored (no answer in time, the connection broke
    /// after the append was sent, the actor was killed mid-append).
    #[error(transparent)]
    Indeterminate(Indeterminate),
}

/// A command whose outcome is unknown: its append may have committed. Retrying it with the same
/// command id is always safe.
#[derive(Debug, thiserror::Error)]
#[error(
    "outcome of command {command_id} on aggregate {id} is unknown (retry it with the same command id): {cause}"
)]
pub struct Indeterminate {
    /// The aggregate id.
    pub id: String,
    /// The command's id, to retry with.
    pub command_id: CommandId,
    /// What happened: [`ExecutorError::Timeout`], [`ExecutorError::Abandoned`],
    /// [`ExecutorError::Store`] with [`StoreError::Indeterminate`], or, for a command known to
    /// be stored whose original outcome cannot be read back now, the store's error or
    /// [`ExecutorError::Activation`] with [`ActivationError::CorruptEvent`].
    #[source]
    pub cause: ExecutorError,
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// The domain error, if the command was rejected by the aggregate.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            CommandError::Rejected(e) => Some(e),
            _ => None,
        }
    }

    /// True when retrying the same command (with the same command id) later may succeed:
    /// every indeterminate outcome, and the retryable not-stored ones.
    pub fn is_retryable(&self) -> bool {
        match self {
            CommandError::Rejected(_) => false,
            CommandError::NotStored(e) => e.is_retryable(),
            CommandError::Indeterminate(_) => true,
        }
    }

    /// True when the command may have been stored.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, CommandError::Indeterminate(_))
    }

    /// True when nothing was stored for the command (rejected or not stored).
    pub fn stored_nothing(&self) -> bool {
        !self.is_indeterminate()
    }

    /// The executor's error, for either kind of failure that is not a rejection.
    pub fn executor_error(&self) -> Option<&ExecutorError> {
        match self {
            CommandError::Rejected(_) => None,
            CommandError::NotStored(e) => Some(e),
            CommandError::Indeterminate(i) => Some(&i.cause),
        }
    }
}

impl<E: std::error::Error + 'static> From<CodecError> for CommandError<E> {
    fn from(error: CodecError) -> Self {
        CommandError::NotStored(error.into())
    }
}
