//! Input a store refuses before touching storage: its own module, beneath the stream ids that
//! are checked against it and the store errors that carry it.

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
    /// An event type, or a snapshot's codec or compression name, contained control characters
    /// (U+0000–U+001F, U+007F–U+009F), which stream ids refuse too; PostgreSQL text cannot hold
    /// NUL at all.
    #[error("{what} must not contain control characters")]
    NameHasControlCharacters {
        /// Which name was bad ("event type", "snapshot codec", "snapshot compression").
        what: &'static str,
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
    /// A periodic reminder's period was zero, or longer than the span of
    /// [`REMINDER_YEARS`](crate::REMINDER_YEARS) (after which it could never come due again).
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
