//! Durable reminders as stored: a named wake-up for one stream, due at a time (optionally
//! periodic), carrying the encoded command to deliver.
//!
//! Reminders change only together with the stream they belong to:
//! [`EventStore::append_with_reminders`](crate::EventStore::append_with_reminders) stores a
//! command's events and its reminder changes in one transaction, after the same version check
//! (and fence) as an append, so there is never a reminder without its command, nor a command
//! without its reminder. A scheduler finds due reminders with
//! [`EventStore::due_reminders`](crate::EventStore::due_reminders).
//!
//! Times are kept to the microsecond (finer parts are truncated), within the years
//! [`REMINDER_YEARS`]; names are compared and ordered byte by byte.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::stream::StreamId;

/// Longest reminder name, in bytes.
pub const MAX_REMINDER_NAME_LEN: usize = 200;

/// The years a reminder's times (due, next due, fired) may fall in: what every backend can
/// store. A time outside them is refused with
/// [`InvalidInput::ReminderTimeOutOfRange`](crate::InvalidInput::ReminderTimeOutOfRange).
pub const REMINDER_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Longest period of a periodic reminder, in milliseconds: the span of [`REMINDER_YEARS`], from
/// the first instant of the first year to the end of the last (3 652 059 days). A longer period
/// could never bring a reminder due again at a time a store keeps, so it is refused with
/// [`InvalidInput::BadReminderPeriod`](crate::InvalidInput::BadReminderPeriod) when scheduled.
pub(crate) const MAX_REMINDER_PERIOD_MS: u64 = 3_652_059 * 86_400_000;

/// A reminder as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReminder {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its name, unique within the stream.
    pub name: String,
    /// A fresh id for every schedule of the name: a replaced reminder gets a new id, so
    /// anything still holding the old id (a firing in flight) no longer matches it.
    pub reminder_id: Uuid,
    /// The shard of the stream when it was scheduled under a fence (0 otherwise), so a node
    /// can load the reminders of the shards it owns.
    pub shard: u32,
    /// When it is due next.
    pub due_at: DateTime<Utc>,
    /// For a periodic reminder, the period in milliseconds (at least 1, at most the span of
    /// [`REMINDER_YEARS`]).
    pub period_ms: Option<u64>,
    /// The command to deliver, encoded by the caller.
    pub payload: Bytes,
    /// Whether the scheduler still fires it (`Scheduled`), or its last firing was refused and
    /// it waits for a new schedule or a cancel (`Rejected`).
    pub state: ReminderState,
    /// Why its last firing failed, if it did.
    pub last_error: Option<String>,
    /// When it last fired, if it has.
    pub last_fired_at: Option<DateTime<Utc>>,
}

/// Whether a stored reminder is still fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReminderState {
    /// Due reminders in this state are fired.
    Scheduled,
    /// A one-shot reminder whose command was rejected when it fired: kept, with its error, so
    /// the rejection is visible; never fired again in this form.
    Rejected,
}

impl ReminderState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReminderState::Scheduled => "scheduled",
            ReminderState::Rejected => "rejected",
        }
    }
}

/// A change to a stream's reminders, stored with a command's events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReminderChange {
    /// Creates the reminder `name`, or replaces it (new id, due time, period and payload;
    /// state back to `Scheduled`, error and `last_fired_at` cleared: the replacement has not
    /// fired yet). Under a fence it records the fence's shard, otherwise shard 0.
    Schedule {
        /// The name, 1 to [`MAX_REMINDER_NAME_LEN`] bytes without control characters.
        name: String,
        /// The new id (see [`StoredReminder::reminder_id`]).
        reminder_id: Uuid,
        /// When it is due.
        due_at: DateTime<Utc>,
        /// The period in milliseconds for a periodic reminder (at least 1, at most the span of
        /// [`REMINDER_YEARS`]: about 10 000 years).
        period_ms: Option<u64>,
        /// The encoded command.
        payload: Bytes,
    },
    /// Removes the reminder `name`, whatever its id; nothing when there is none.
    Cancel {
        /// The name.
        name: String,
    },
    /// Records that reminder `reminder_id`, due at `due_at`, fired: a periodic one moves to
    /// `next_due_at`; a one-shot one (`next_due_at` None) is removed, unless `error` is set, in
    /// which case it is kept as `Rejected` with that error. `last_fired_at` is set to `fired_at`.
    ///
    /// It is also a precondition of the whole call: when its turn comes (after the changes
    /// before it in the call), the stream's reminder `name` must be `Scheduled` under
    /// `reminder_id` at `due_at` (to the microsecond). Otherwise it was replaced, cancelled,
    /// moved on or rejected since the firing was decided, and the call is refused with
    /// [`StoreError::StaleFiring`](crate::StoreError::StaleFiring): none of its events and none
    /// of its changes are stored, so a command fired in a reminder's old form never commits.
    ///
    /// The precondition is checked last, after the expected version and the event ids (the
    /// order is in [`EventStore::append_with_reminders`](crate::EventStore::append_with_reminders)).
    /// A firing sent again after it was applied is stale by then (the first attempt moved the
    /// reminder on), but its events' ids are stored: it is refused with
    /// [`StoreError::CommandAlreadyApplied`](crate::StoreError::CommandAlreadyApplied), so the
    /// retry learns that its command was applied rather than that nothing was delivered.
    ///
    /// Whether it is periodic is decided by `next_due_at` alone, not by the stored period. A
    /// periodic firing keeps the reminder's state and records `error` as `last_error` (`None`
    /// clears it), so a refused periodic command is visible while the reminder goes on. The
    /// error must be at most the store's event payload limit long and hold no NUL character
    /// ([`InvalidInput::BadReminderError`](crate::InvalidInput::BadReminderError)).
    Fired {
        /// The reminder's name.
        name: String,
        /// The id it fired under.
        reminder_id: Uuid,
        /// The due time it fired for: the stored reminder's when the firing was decided.
        due_at: DateTime<Utc>,
        /// When it fired.
        fired_at: DateTime<Utc>,
        /// The next due time of a periodic reminder.
        next_due_at: Option<DateTime<Utc>>,
        /// Why the delivered command was refused, if it was.
        error: Option<String>,
    },
}

impl ReminderChange {
    /// The name of the reminder it changes.
    pub fn name(&self) -> &str {
        match self {
            ReminderChange::Schedule { name, .. }
            | ReminderChange::Cancel { name }
            | ReminderChange::Fired { name, .. } => name,
        }
    }
}

/// What [`EventStore::due_reminders`](crate::EventStore::due_reminders) looks for.
///
/// Reminders due at the same instant come back in no particular order.
///
/// Reminders the caller has set aside are named in [`skip`](Self::skip) and left out by the
/// store, in its query, before the limit is applied: a scheduler waiting to retry reminders
/// that failed, or that no executor of its node serves, would otherwise get them back first
/// at every poll, and with `limit` of them never see the reminders due after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReminders {
    /// Only reminders of these shards; every shard when `None`.
    pub shards: Option<Vec<u32>>,
    /// Due at or before this time.
    pub due_by: DateTime<Utc>,
    /// At most this many (at least 1; 0 returns nothing), the earliest due first.
    pub limit: usize,
    /// Reminders left out, by [`reminder_id`](StoredReminder::reminder_id), whatever else they
    /// match; they do not count towards `limit`. Empty to leave none out.
    pub skip: Vec<Uuid>,
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn the_longest_reminder_period_is_the_span_of_the_reminder_years() {
        let first = NaiveDate::from_ymd_opt(*REMINDER_YEARS.start(), 1, 1);
        let after_last = NaiveDate::from_ymd_opt(REMINDER_YEARS.end() + 1, 1, 1);
        let (Some(first), Some(after_last)) = (first, after_last) else {
            panic!("the reminder years are dates chrono keeps");
        };
        let span = (after_last - first).num_milliseconds();
        assert_eq!(u64::try_from(span).ok(), Some(MAX_REMINDER_PERIOD_MS));
    }
}
