//! Typed errors of the storage contracts.

use crate::stream::StreamId;

/// Input a store refuses before touching storage. Nothing is written when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// An aggregate type or id was empty.
    #[error("{what} must not be empty")]
    EmptyId {
        /// Which part was empty.
        what: &'static str,
    },
    /// An aggregate type or id was longer than the store accepts.
    #[error("{what} is {len} bytes long; at most {max} are accepted")]
    IdTooLong {
        /// Which part was too long.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An aggregate type or id contained control characters.
    #[error("{what} must not contain control characters")]
    IdHasControlCharacters {
        /// Which part was bad.
        what: &'static str,
    },
    /// An append carried no events.
    #[error("an append must carry at least one event")]
    NoEvents,
    /// An append carried more events than the store accepts in one batch.
    #[error("an append carried {count} events; at most {max} are accepted at once")]
    TooManyEvents {
        /// Events in the batch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An event's payload (or a snapshot's bytes) exceeded the configured limit.
    #[error("{what} is {size} bytes; the limit is {limit} bytes")]
    PayloadTooLarge {
        /// What was too large ("event payload", "snapshot").
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An event type name was empty or too long.
    #[error("event type must be 1..={max} bytes, got {len}")]
    BadEventType {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Two events in one append had the same event id.
    #[error("event id {0} appears twice in one append")]
    DuplicateEventId(uuid::Uuid),
    /// A version that cannot exist (for example version 0 for a snapshot).
    #[error("{0}")]
    BadVersion(String),
    /// A page size of zero.
    #[error("page size must be at least 1")]
    ZeroPageSize,
    /// A reminder name was empty or longer than
    /// [`MAX_REMINDER_NAME_LEN`](crate::MAX_REMINDER_NAME_LEN) bytes.
    #[error("a reminder name must be 1..={max} bytes long, got {len}")]
    BadReminderName {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A reminder name contained control characters.
    #[error("reminder name {name:?} must not contain control characters")]
    ReminderNameHasControlCharacters {
        /// The name.
        name: String,
    },
    /// A periodic reminder's period was zero, or longer than a store can keep (`i64::MAX` ms).
    #[error("reminder {name:?}: the period must be 1..={max} ms, got {period_ms}")]
    BadReminderPeriod {
        /// The reminder's name.
        name: String,
        /// The period asked for, in milliseconds.
        period_ms: u64,
        /// The longest period accepted, in milliseconds.
        max: u64,
    },
    /// A reminder time (due, next due or fired) outside the years every store keeps
    /// ([`REMINDER_YEARS`](crate::REMINDER_YEARS)).
    #[error("reminder {name:?}: {what} {at} is outside the years {min_year}..={max_year}")]
    ReminderTimeOutOfRange {
        /// The reminder's name.
        name: String,
        /// Which time ("due time", "next due time", "firing time").
        what: &'static str,
        /// The time given.
        at: chrono::DateTime<chrono::Utc>,
        /// The earliest year accepted.
        min_year: i32,
        /// The latest year accepted.
        max_year: i32,
    },
    /// The error recorded for a reminder's firing contained a NUL character (which PostgreSQL
    /// text cannot hold) or was longer than the event payload limit.
    #[error(
        "reminder {name:?}: a firing's error must be at most {max} bytes without NUL characters \
         (got {len} bytes)"
    )]
    BadReminderError {
        /// The reminder's name.
        name: String,
        /// The error's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A snapshot schedule's name, aggregate type or id, or cron expression was empty, too
    /// long or contained a NUL character.
    #[error(
        "a schedule's {what} must be non-empty, at most {max} bytes, without NUL characters \
         (got {value:?})",
        max = crate::schedule::MAX_SCHEDULE_NAME_LEN
    )]
    Schedule {
        /// Which field.
        what: &'static str,
        /// Its value (the first 64 characters).
        value: String,
    },
    /// A figure of a per-day snapshot statistics addition beyond what a store keeps
    /// ([`MAX_DAY_FIGURE`](crate::MAX_DAY_FIGURE)).
    #[error("snapshot statistics: {what} is {value}; at most {max} can be added at once")]
    DayFigureTooLarge {
        /// Which figure.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
}

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
