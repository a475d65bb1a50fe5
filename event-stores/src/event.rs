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
    let hash = event_id_hash(
        stream.aggregate_type().as_bytes(),
        stream.aggregate_id().as_bytes(),
        command_id.as_bytes(),
        index,
    )
    .to_le_bytes();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&command_id.as_bytes()[..6]);
    bytes[6..].copy_from_slice(&hash[..10]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Longest input of [`command_event_id`]'s hash: both stream parts, two separators, a command
/// id and an index.
const EVENT_ID_INPUT_BYTES: usize = 2 * crate::stream::MAX_ID_LEN + 2 + 16 + 4;

/// xxh3-128 of `aggregate_type ‖ 0 ‖ aggregate_id ‖ 0 ‖ command_id ‖ index (LE)`, in one pass
/// over a stack buffer: a streaming hasher's set-up copies a few hundred bytes, which is about
/// half the cost for a short stream id (41 → 17–23 ns), and XXH3 gives the same hash for the
/// same bytes either way. Longer input than a valid stream id can give is streamed.
fn event_id_hash(
    aggregate_type: &[u8],
    aggregate_id: &[u8],
    command_id: &[u8; 16],
    index: u32,
) -> u128 {
    let len = aggregate_type.len() + aggregate_id.len() + 2 + 16 + 4;
    if len > EVENT_ID_INPUT_BYTES {
        return streamed_event_id_hash(aggregate_type, aggregate_id, command_id, index);
    }
    let mut buffer = [0u8; EVENT_ID_INPUT_BYTES];
    let mut at = 0;
    for part in [
        aggregate_type,
        &[0],
        aggregate_id,
        &[0],
        command_id,
        &index.to_le_bytes(),
    ] {
        buffer[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    xxhash_rust::xxh3::xxh3_128(&buffer[..len])
}

/// [`event_id_hash`] for inputs too long for its buffer.
fn streamed_event_id_hash(
    aggregate_type: &[u8],
    aggregate_id: &[u8],
    command_id: &[u8; 16],
    index: u32,
) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(aggregate_type);
    hasher.update(&[0]);
    hasher.update(aggregate_id);
    hasher.update(&[0]);
    hasher.update(command_id);
    hasher.update(&index.to_le_bytes());
    hasher.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn command_event_ids_never_change_across_releases() {
        // Stored ids are matched against retries' ids: a different derivation would let a
        // retry sent across an upgrade store its events twice.
        let stream = StreamId::new("account", "acc-42").unwrap_or_else(|e| panic!("{e}"));
        let command = Uuid::from_u128(0x0190_c4b8_7a31_7c2d_9e4f_0a1b_2c3d_4e5f);
        let long = StreamId::new("account", "x".repeat(250)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            [
                command_event_id(&stream, command, 0).to_string(),
                command_event_id(&stream, command, 7).to_string(),
                command_event_id(&long, command, 0).to_string(),
            ],
            GOLDEN.map(str::to_owned)
        );
    }

    /// Computed by the derivation as first released (a streamed xxh3-128).
    const GOLDEN: [&str; 3] = [
        "0190c4b8-7a31-81c6-a800-60a024d459a9",
        "0190c4b8-7a31-8527-9dbb-ff822f0a06ef",
        "0190c4b8-7a31-860a-9ef6-e6327d051ca3",
    ];

    proptest! {
        #[test]
        fn the_one_shot_hash_equals_the_streamed_one_for_every_length(
            aggregate_type in prop::collection::vec(any::<u8>(), 0..260),
            aggregate_id in prop::collection::vec(any::<u8>(), 0..260),
            command_id in any::<[u8; 16]>(),
            index in any::<u32>(),
        ) {
            prop_assert_eq!(
                event_id_hash(&aggregate_type, &aggregate_id, &command_id, index),
                streamed_event_id_hash(&aggregate_type, &aggregate_id, &command_id, index)
            );
        }
    }

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
