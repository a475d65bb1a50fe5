//! [`Row`]: an event as the in-memory store keeps it.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{EventMetadata, NewEvent, RecordedEvent};
use crate::stream::StreamId;

/// An event as the in-memory store keeps it; reads turn it back into a [`RecordedEvent`].
///
/// Every stored event stays in memory, and on a busy store fresh memory (allocation and page
/// faults) is most of what an append costs, so a row is about half the size of a
/// `RecordedEvent` with its type name: the stream's id and the type name are shared rather
/// than copied (a stream's events mostly repeat the previous event's type), and metadata takes
/// room only when there is some.
pub(super) struct Row {
    pub(super) event_id: Uuid,
    pub(super) command_id: Option<Uuid>,
    pub(super) stream: Arc<StreamId>,
    pub(super) version: u64,
    pub(super) event_type: Arc<str>,
    pub(super) schema_version: u32,
    pub(super) payload: Bytes,
    /// `None` for empty (default) metadata.
    pub(super) metadata: Option<Box<EventMetadata>>,
    pub(super) recorded_at: DateTime<Utc>,
    pub(super) position: u64,
}

/// Where a new row goes: its stream, version, time and position.
pub(super) struct Place<'a> {
    pub(super) stream: &'a Arc<StreamId>,
    pub(super) version: u64,
    pub(super) recorded_at: DateTime<Utc>,
    pub(super) position: u64,
}

impl Row {
    /// The row of `event` at `place`, sharing the type name of `previous` (the stream's event
    /// before it) when it is the same.
    pub(super) fn new(event: NewEvent, place: Place<'_>, previous: Option<&Row>) -> Self {
        let event_type = match previous {
            Some(previous) if *previous.event_type == *event.event_type => {
                Arc::clone(&previous.event_type)
            }
            _ => Arc::from(event.event_type),
        };
        let metadata =
            (event.metadata != EventMetadata::default()).then(|| Box::new(event.metadata));
        Self {
            event_id: event.event_id,
            command_id: event.command_id,
            stream: Arc::clone(place.stream),
            version: place.version,
            event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata,
            recorded_at: place.recorded_at,
            position: place.position,
        }
    }

    /// The event as a read returns it.
    pub(super) fn to_event(&self) -> RecordedEvent {
        RecordedEvent {
            event_id: self.event_id,
            command_id: self.command_id,
            stream: StreamId::clone(&self.stream),
            version: self.version,
            event_type: String::from(&*self.event_type),
            schema_version: self.schema_version,
            payload: self.payload.clone(),
            metadata: self.metadata.as_deref().copied().unwrap_or_default(),
            recorded_at: self.recorded_at,
            position: self.position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceParent;

    fn place(stream: &Arc<StreamId>) -> Place<'_> {
        Place {
            stream,
            version: 3,
            recorded_at: Utc::now(),
            position: 9,
        }
    }

    #[test]
    fn a_row_reads_back_as_the_event_it_stored() {
        let stream = Arc::new(StreamId::new("t", "s").unwrap_or_else(|e| panic!("{e}")));
        let plain = NewEvent::new("Opened", 2, vec![1u8, 2]);
        let traced = NewEvent::new("Opened", 1, vec![3u8]).with_metadata(EventMetadata {
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            trace_parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse::<TraceParent>()
                .ok(),
        });
        let first = Row::new(plain.clone(), place(&stream), None);
        let second = Row::new(traced.clone(), place(&stream), Some(&first));
        assert!(Arc::ptr_eq(&first.event_type, &second.event_type));
        assert!(first.metadata.is_none() && second.metadata.is_some());
        for (row, event) in [(&first, &plain), (&second, &traced)] {
            let read = row.to_event();
            assert_eq!(
                (read.event_id, read.command_id, &read.event_type),
                (event.event_id, event.command_id, &event.event_type)
            );
            assert_eq!(
                (read.schema_version, &read.payload, read.metadata),
                (event.schema_version, &event.payload, event.metadata)
            );
            assert_eq!((read.version, read.position), (3, 9));
            assert_eq!(read.stream, *stream);
        }
    }
}
