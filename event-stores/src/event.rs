//! Events as stored: what a caller hands in and what a read gives back.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::stream::StreamId;
use crate::trace::TraceParent;

/// Correlation and causation ids and the caller's trace context, carried with every event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EventMetadata {
    /// Id shared by everything done on behalf of one request.
    pub correlation_id: Option<Uuid>,
    /// Id of the message (command or event) that caused this event.
    pub causation_id: Option<Uuid>,
    /// The W3C `traceparent` of the call that produced the event.
    pub trace_parent: Option<TraceParent>,
}

/// An event to append. The store assigns its version, `recorded_at` and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id across the store. A UUID v7 (time-ordered) from [`NewEvent::new`]; derived from
    /// the command by [`NewEvent::for_command`], so a retried command collides with itself.
    pub event_id: Uuid,
    /// The command that produced the event, if it came from one.
    pub command_id: Option<Uuid>,
    /// The event's type name, e.g. `"Deposited"`.
    pub event_type: String,
    /// Schema version of the payload, so upcasters can tell old shapes from new.
    pub schema_version: u32,
    /// The encoded event (MessagePack with named fields in this framework).
    pub payload: Bytes,
    /// Correlation and causation ids.
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// An event with a fresh UUID v7 id and empty metadata.
    pub fn new(
        event_type: impl Into<String>,
        schema_version: u32,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            command_id: None,
            event_type: event_type.into(),
            schema_version,
            payload: payload.into(),
            metadata: EventMetadata::default(),
        }
    }

    /// Marks the event as the `index`-th (from 0) written by command `command_id` on `stream`,
    /// with the id [`command_event_id`] derives from them: appending the same command's events
    /// twice collides on the store's unique event id, whatever else changed in between.
    pub fn for_command(mut self, stream: &StreamId, command_id: Uuid, index: u32) -> Self {
        self.event_id = command_event_id(stream, command_id, index);
        self.command_id = Some(command_id);
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as read back from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The event's unique id.
    pub event_id: Uuid,
    /// The command that produced it, if it came from one.
    pub command_id: Option<Uuid>,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version within the stream: 1, 2, 3 … with no gaps.
    pub version: u64,
    /// The event's type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// The encoded event.
    pub payload: Bytes,
    /// Correlation and causation ids.
    pub metadata: EventMetadata,
    /// When the store recorded it (microsecond precision; never decreasing within a stream).
    pub recorded_at: DateTime<Utc>,
    /// Store-wide position, increasing in commit order across all streams.
    pub position: u64,
}

/// The id of the `index`-th event (from 0) written by command `command_id` on `stream`.
///
/// Deterministic, so a retry of the command produces the same ids and the store's unique event
/// id refuses the second copy. The first 6 bytes are the command id's own (the millisecond
/// timestamp of a UUID v7 command id), so ids of recent commands stay close together in a
/// B-tree; the other 10 bytes come from xxh3-128 over the stream, the command id and the index.
/// The result is marked as a UUID v8 (custom layout).
pub fn command_event_id(stream: &StreamId, command_id: Uuid, index: u32) -> Uuid {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(stream.aggregate_type().as_bytes());
    hasher.update(&[0]);
    hasher.update(stream.aggregate_id().as_bytes());
    hasher.update(&[0]);
    hasher.update(command_id.as_bytes());
    hasher.update(&index.to_le_bytes());
    let hash = hasher.digest128().to_le_bytes();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&command_id.as_bytes()[..6]);
    bytes[6..].copy_from_slice(&hash[..10]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_event_ids_are_deterministic_and_distinct_per_stream_command_and_index() {
        let a = StreamId::new("account", "a").unwrap_or_else(|e| panic!("{e}"));
        let b = StreamId::new("account", "b").unwrap_or_else(|e| panic!("{e}"));
        let command = Uuid::now_v7();
        let first = command_event_id(&a, command, 0);
        assert_eq!(first, command_event_id(&a, command, 0));
        assert_eq!(first.get_version_num(), 8);
        assert_eq!(&first.as_bytes()[..6], &command.as_bytes()[..6]);
        let others = [
            command_event_id(&a, command, 1),
            command_event_id(&b, command, 0),
            command_event_id(&a, Uuid::now_v7(), 0),
        ];
        assert!(others.iter().all(|id| *id != first));
        // "ab" + "c" and "a" + "bc" must not hash alike.
        let ab = StreamId::new("ab", "c").unwrap_or_else(|e| panic!("{e}"));
        let bc = StreamId::new("a", "bc").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(
            command_event_id(&ab, command, 0),
            command_event_id(&bc, command, 0)
        );
    }
}
