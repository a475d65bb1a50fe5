//! Input limits every backend enforces before it writes anything.

use std::collections::HashSet;

use crate::error::InvalidInput;
use crate::event::NewEvent;
use crate::snapshot::SnapshotRecord;

/// Longest event type name accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Configurable limits on what a store accepts. Checked in full before any write, so a refused
/// append or save stores nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest event payload, in bytes.
    pub max_event_payload_bytes: usize,
    /// Most events in one append.
    pub max_events_per_append: usize,
    /// Largest snapshot (stored bytes).
    pub max_snapshot_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_event_payload_bytes: 1024 * 1024,
            max_events_per_append: 10_000,
            max_snapshot_bytes: 64 * 1024 * 1024,
        }
    }
}

impl StoreLimits {
    /// Checks a batch of events for an append.
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
        for event in events {
            if event.event_type.is_empty() || event.event_type.len() > MAX_EVENT_TYPE_LEN {
                return Err(InvalidInput::BadEventType {
                    len: event.event_type.len(),
                    max: MAX_EVENT_TYPE_LEN,
                });
            }
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
        }
        Ok(())
    }

    /// Checks a snapshot record before saving it.
    pub fn check_snapshot(&self, record: &SnapshotRecord) -> Result<(), InvalidInput> {
        if record.version == 0 {
            return Err(InvalidInput::BadVersion(
                "a snapshot must be taken at version 1 or later".into(),
            ));
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
