//! Input limits every backend enforces before it writes anything.

use std::collections::HashSet;

use crate::event::NewEvent;
use crate::invalid_input::InvalidInput;
use crate::reminder::{
    MAX_REMINDER_NAME_LEN, MAX_REMINDER_PERIOD_MS, REMINDER_YEARS, ReminderChange,
};
use crate::snapshot::SnapshotRecord;
use crate::stream::has_control_characters;

/// Longest event type name accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Checks an event type: 1 to [`MAX_EVENT_TYPE_LEN`] bytes
/// ([`InvalidInput::BadEventType`]) and, like a stream id, no control characters
/// ([`InvalidInput::NameHasControlCharacters`]): PostgreSQL text cannot hold NUL, and a type
/// with a line break or an escape sequence is no name any reader could match.
pub(crate) fn check_event_type(event_type: &str) -> Result<(), InvalidInput> {
    if event_type.is_empty() || event_type.len() > MAX_EVENT_TYPE_LEN {
        return Err(InvalidInput::BadEventType {
            len: event_type.len(),
            max: MAX_EVENT_TYPE_LEN,
        });
    }
    if has_control_characters(event_type) {
        return Err(InvalidInput::NameHasControlCharacters { what: "event type" });
    }
    Ok(())
}

/// Configurable limits on what a store accepts. Checked in full before any write, so a refused
/// append or save stores nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest event payload, in bytes.
    pub max_event_payload_bytes: usize,
    /// Most events in one append.
    pub max_events_per_append: usize,
    /// Most payload bytes in one append, all its events together (default 64 MiB): without it
    /// the two limits above allow appends of gigabytes, more than PostgreSQL takes in one
    /// message, which could then never be stored.
    pub max_append_bytes: usize,
    /// Largest snapshot (stored bytes).
    pub max_snapshot_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_event_payload_bytes: 1024 * 1024,
            max_events_per_append: 10_000,
            max_append_bytes: 64 * 1024 * 1024,
            max_snapshot_bytes: 64 * 1024 * 1024,
        }
    }
}

impl StoreLimits {
    /// Checks a batch of events for an append: 1 to `max_events_per_append` events, each with a
    /// type of 1 to [`MAX_EVENT_TYPE_LEN`] bytes without control characters (as stream ids) and
    /// a payload within `max_event_payload_bytes`, no event id twice, and all payloads together
    /// within `max_append_bytes`.
    pub fn check_append(&self, events: &[NewEvent]) -> Result<(), InvalidInput> {
        if events.is_empty() {
            return Err(InvalidInput::NoEvents);
        }
        if events.len() > self.max_events_per_append {
            return Err(InvalidInput::TooManyEvents {
                count: events.len(),
                max: self.max_events_per_append,
            });
        }
        let mut ids = HashSet::with_capacity(events.len());
        let mut total = 0usize;
        for event in events {
            check_event_type(&event.event_type)?;
            if event.payload.len() > self.max_event_payload_bytes {
                return Err(InvalidInput::PayloadTooLarge {
                    what: "event payload",
                    size: event.payload.len(),
                    limit: self.max_event_payload_bytes,
                });
            }
            if !ids.insert(event.event_id) {
                return Err(InvalidInput::DuplicateEventId(event.event_id));
            }
            total = total.saturating_add(event.payload.len());
        }
        self.check_append_bytes(total)
    }

    /// Checks the payload bytes of a whole append against `max_append_bytes`.
    pub(crate) fn check_append_bytes(&self, total: usize) -> Result<(), InvalidInput> {
        if total > self.max_append_bytes {
            return Err(InvalidInput::PayloadTooLarge {
                what: "append (all its payloads together)",
                size: total,
                limit: self.max_append_bytes,
            });
        }
        Ok(())
    }

    /// Checks reminder changes before storing them: names of 1 to [`MAX_REMINDER_NAME_LEN`]
    /// bytes without control characters, periods of 1 ms up to the span of [`REMINDER_YEARS`]
    /// (a longer one could never come due again), times within [`REMINDER_YEARS`], payloads within `max_event_payload_bytes`, and firing errors within
    /// that limit too and without NUL characters.
    pub fn check_reminders(&self, changes: &[ReminderChange]) -> Result<(), InvalidInput> {
        changes
            .iter()
            .try_for_each(|change| self.check_reminder(change))
    }

    fn check_reminder(&self, change: &ReminderChange) -> Result<(), InvalidInput> {
        let name = change.name();
        if name.is_empty() || name.len() > MAX_REMINDER_NAME_LEN {
            return Err(InvalidInput::BadReminderName {
                len: name.len(),
                max: MAX_REMINDER_NAME_LEN,
            });
        }
        if has_control_characters(name) {
            return Err(InvalidInput::ReminderNameHasControlCharacters { name: name.into() });
        }
        let time = |what: &'static str, at: &chrono::DateTime<chrono::Utc>| {
            use chrono::Datelike;
            if REMINDER_YEARS.contains(&at.year()) {
                Ok(())
            } else {
                Err(InvalidInput::ReminderTimeOutOfRange {
                    name: name.into(),
                    what,
                    at: *at,
                    min_year: *REMINDER_YEARS.start(),
                    max_year: *REMINDER_YEARS.end(),
                })
            }
        };
        match change {
            ReminderChange::Schedule {
                due_at,
                period_ms,
                payload,
                ..
            } => {
                time("due time", due_at)?;
                let max = MAX_REMINDER_PERIOD_MS;
                if let Some(period_ms) = *period_ms
                    && !(1..=max).contains(&period_ms)
                {
                    return Err(InvalidInput::BadReminderPeriod {
                        name: name.into(),
                        period_ms,
                        max,
                    });
                }
                if payload.len() > self.max_event_payload_bytes {
                    return Err(InvalidInput::PayloadTooLarge {
                        what: "reminder payload",
                        size: payload.len(),
                        limit: self.max_event_payload_bytes,
                    });
                }
            }
            ReminderChange::Cancel { .. } => {}
            ReminderChange::Fired {
                fired_at,
                next_due_at,
                error,
                ..
            } => {
                time("firing time", fired_at)?;
                if let Some(next) = next_due_at {
                    time("next due time", next)?;
                }
                if let Some(error) = error
                    && (error.len() > self.max_event_payload_bytes || error.contains('\0'))
                {
                    return Err(InvalidInput::BadReminderError {
                        name: name.into(),
                        len: error.len(),
                        max: self.max_event_payload_bytes,
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks a snapshot record before saving it: taken at version 1 or later, its codec and
    /// compression names without control characters (as stream ids and event types), its bytes
    /// within `max_snapshot_bytes` and `stored_size` their length.
    pub fn check_snapshot(&self, record: &SnapshotRecord) -> Result<(), InvalidInput> {
        if record.version == 0 {
            return Err(InvalidInput::BadVersion(
                "a snapshot must be taken at version 1 or later".into(),
            ));
        }
        for (what, name) in [
            ("snapshot codec", &record.codec),
            ("snapshot compression", &record.compression),
        ] {
            if has_control_characters(name) {
                return Err(InvalidInput::NameHasControlCharacters { what });
            }
        }
        if record.bytes.len() > self.max_snapshot_bytes {
            return Err(InvalidInput::PayloadTooLarge {
                what: "snapshot",
                size: record.bytes.len(),
                limit: self.max_snapshot_bytes,
            });
        }
        if record.stored_size != record.bytes.len() as u64 {
            return Err(InvalidInput::BadVersion(format!(
                "snapshot stored_size {} does not match its {} bytes",
                record.stored_size,
                record.bytes.len()
            )));
        }
        Ok(())
    }
}
