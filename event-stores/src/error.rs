//! Typed errors of the storage contracts.

use crate::invalid_input::InvalidInput;
use crate::stream::StreamId;

/// Every failure of an [`EventStore`](crate::EventStore) or [`SnapshotStore`](crate::SnapshotStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream's current version was not the expected one: someone else appended first
    /// (expected behind) or the caller assumed events that do not exist (expected ahead).
    /// Nothing was written.
    #[error("version conflict on {stream}: expected version {expected}, actual {actual}")]
    VersionConflict {
        /// The stream appended to.
        stream: StreamId,
        /// The version the caller expected.
        expected: u64,
        /// The stream's version when the append was refused.
        actual: u64,
    },
    /// The input was refused before anything was stored.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// The events of this command are already in the stream: an append carried an event id
    /// derived from a command id ([`NewEvent::for_command`](crate::NewEvent::for_command)) that
    /// is already stored there. Nothing was written; [`EventStore::read_command`](crate::EventStore::read_command)
    /// returns what the first attempt stored.
    #[error("command {command_id} was already applied to {stream}")]
    CommandAlreadyApplied {
        /// The stream appended to.
        stream: StreamId,
        /// The command whose events are already stored.
        command_id: uuid::Uuid,
    },
    /// A [`ReminderChange::Fired`](crate::ReminderChange::Fired) did not find the reminder it
    /// records in the form that fired: the stream's reminder of that name has another id (it
    /// was replaced), is gone (cancelled, or a one-shot one already fired), is due at another
    /// time (a periodic one already moved on), or was recorded as rejected. The whole call was
    /// refused: neither its events nor any of its reminder changes were written.
    ///
    /// Checked after the version and the event ids: a call carrying events of a command that
    /// is already stored is [`StoreError::CommandAlreadyApplied`] instead, stale or not (a
    /// firing sent again after it was applied is both), so for a call with its command's
    /// events this error also says that no earlier attempt stored them.
    #[error(
        "reminder {name:?} of {stream} is no longer in the form that fired (id and due time, \
         scheduled): its firing is stale"
    )]
    StaleFiring {
        /// The stream.
        stream: StreamId,
        /// The reminder's name.
        name: String,
    },
    /// The backend could not be reached (connection refused, pool timed out, server
    /// unreachable) before the operation was sent: nothing was written, and the same call may
    /// succeed later.
    #[error("store unavailable (retryable): {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The connection failed or timed out after a write was sent: it may or may not have been
    /// committed. Read the stream to learn which. An append of events derived from a command id
    /// can be retried safely: a second copy is refused with
    /// [`StoreError::CommandAlreadyApplied`], and the expected version refuses any other write
    /// made on stale state.
    #[error("outcome unknown (the write may have committed): {message}")]
    Indeterminate {
        /// What failed.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A fenced append was refused: the shard is no longer owned by the fence's owner at the
    /// fence's epoch (another node took it over, or it was released). Nothing was written;
    /// refresh the route and retry on the current owner.
    #[error("append to {stream} fenced: shard {shard} is no longer owned at epoch {epoch}")]
    Fenced {
        /// The stream appended to.
        stream: StreamId,
        /// The shard.
        shard: u32,
        /// The epoch the append carried.
        epoch: u64,
    },
    /// The backend does not implement this operation (for example fenced appends on the
    /// in-memory store, which serves one process and has no shard owners).
    #[error("{0} is not supported by this store")]
    Unsupported(&'static str),
    /// The server would lose acknowledged commits in a crash and
    #[cfg_attr(
        feature = "postgres",
        doc = "[`PgConfig::require_durability`](crate::PgConfig::require_durability) is set."
    )]
    #[cfg_attr(
        not(feature = "postgres"),
        doc = "`PgConfig::require_durability` (feature `postgres`) is set."
    )]
    #[error("the server is not crash-safe: {0}")]
    NotDurable(String),
    /// Stored data that violates the store's own rules (for example a negative version).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("store backend error: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// True when retrying the same call later may succeed (the backend was unreachable, a
    /// write's outcome is unknown, or the append was fenced and belongs on the shard's new
    /// owner). A version conflict is not "retryable" in this sense: the caller must re-read
    /// first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. }
                | StoreError::Indeterminate { .. }
                | StoreError::Fenced { .. }
        )
    }

    /// True when a write may have been committed although it failed
    /// ([`StoreError::Indeterminate`]). Every other error means nothing was written.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, StoreError::Indeterminate { .. })
    }

    /// True for [`StoreError::VersionConflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::VersionConflict { .. })
    }
}

/// Shorthand for results of store operations.
pub type StoreResult<T> = Result<T, StoreError>;
