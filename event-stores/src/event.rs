//! Events as stored: what a caller hands in and what a read gives back.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::stream::StreamId;

/// Correlation and causation ids carried with every event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EventMetadata {
    /// Id shared by everything done on behalf of one request.
    pub correlation_id: Option<Uuid>,
    /// Id of the message (command or event) that caused this event.
    pub causation_id: Option<Uuid>,
}

/// An event to append. The store assigns its version, `recorded_at` and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id, a UUID v7 (time-ordered) unless the caller has its own.
    pub event_id: Uuid,
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
            event_type: event_type.into(),
            schema_version,
            payload: payload.into(),
            metadata: EventMetadata::default(),
        }
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
