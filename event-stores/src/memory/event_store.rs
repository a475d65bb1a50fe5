use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;

use uuid::Uuid;

use crate::error::{InvalidInput, StoreError, StoreResult};
use crate::event::{NewEvent, RecordedEvent, command_event_id};
use crate::event_store::{AppendReceipt, CrashSafety, EventStore, ReadQuery};
use crate::limits::StoreLimits;
use crate::stream::StreamId;

use super::now_micros;

/// An event store held in process memory. Fast, and gone when the process ends.
#[derive(Default, Clone)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

/// Hashing for the store's own maps: foldhash is several times faster than the standard
/// library's SipHash on 16-byte ids and short stream names, and keeps a random per-map seed.
type Hasher = foldhash::fast::RandomState;

type Stream = Arc<Mutex<Vec<Arc<RecordedEvent>>>>;

#[derive(Default)]
struct Log {
    events: Vec<Arc<RecordedEvent>>,
    ids: std::collections::HashMap<Uuid, u64, Hasher>,
}

#[derive(Default)]
struct Inner {
    streams: DashMap<StreamId, Stream, Hasher>,
    /// Every event in position order; `log[p - 1]` has position `p`; and every event id with
    /// the position of its event, the store-wide uniqueness check of event ids.
    log: Mutex<Log>,
    limits: StoreLimits,
}

impl InMemoryEventStore {
    /// An empty store with default [`StoreLimits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: StoreLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                ..Inner::default()
            }),
        }
    }

    fn stream(&self, stream: &StreamId) -> Option<Stream> {
        self.inner
            .streams
            .get(stream)
            .map(|s| Arc::clone(s.value()))
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt> {
        self.inner.limits.check_append(&events)?;
        // A shared lookup first: only a stream's first append takes the shard's write lock.
        let slot = match self.stream(stream) {
            Some(slot) => slot,
            None => Arc::clone(
                self.inner
                    .streams
                    .entry(stream.clone())
                    .or_default()
                    .value(),
            ),
        };
        let mut recorded = slot.lock();
        let actual = recorded.len() as u64;
        if actual != expected_version {
            return Err(StoreError::VersionConflict {
                stream: stream.clone(),
                expected: expected_version,
                actual,
            });
        }
        let recorded_at = match recorded.last() {
            Some(last) => now_micros().max(last.recorded_at),
            None => now_micros(),
        };
        let mut log = self.inner.log.lock();
        if let Some(clash) = events
            .iter()
            .find_map(|e| log.ids.get(&e.event_id).map(|p| (e, *p)))
        {
            let (event, position) = clash;
            let stored = usize::try_from(position - 1)
                .ok()
                .and_then(|i| log.events.get(i));
            return Err(match (stored, event.command_id) {
                (Some(stored), Some(command_id))
                    if stored.stream == *stream && stored.command_id == Some(command_id) =>
                {
                    StoreError::CommandAlreadyApplied {
                        stream: stream.clone(),
                        command_id,
                    }
                }
                _ => InvalidInput::DuplicateEventId(event.event_id).into(),
            });
        }
        let first_position = log.events.len() as u64 + 1;
        let count = events.len() as u64;
        for (offset, event) in (0u64..).zip(events) {
            let event = Arc::new(RecordedEvent {
                event_id: event.event_id,
                command_id: event.command_id,
                stream: stream.clone(),
                version: expected_version + offset + 1,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at,
                position: first_position + offset,
            });
            log.ids.insert(event.event_id, first_position + offset);
            log.events.push(Arc::clone(&event));
            recorded.push(event);
        }
        Ok(AppendReceipt {
            first_version: expected_version + 1,
            last_version: expected_version + count,
            recorded_at,
            last_position: first_position + count - 1,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        query: ReadQuery,
    ) -> StoreResult<Vec<RecordedEvent>> {
        query.check()?;
        let Some(slot) = self.stream(stream) else {
            return Ok(Vec::new());
        };
        let recorded = slot.lock();
        let start = usize::try_from(query.after_version)
            .unwrap_or(usize::MAX)
            .min(recorded.len());
        let end = query
            .up_to_version
            .map_or(recorded.len(), |v| {
                usize::try_from(v).unwrap_or(usize::MAX).min(recorded.len())
            })
            .max(start)
            .min(start.saturating_add(query.page_size));
        Ok(recorded[start..end]
            .iter()
            .take_while(|e| query.up_to_time.is_none_or(|t| e.recorded_at <= t))
            .map(|e| RecordedEvent::clone(e))
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        Ok(self.stream(stream).map_or(0, |s| s.lock().len() as u64))
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        let log = self.inner.log.lock();
        let start = usize::try_from(after_position)
            .unwrap_or(usize::MAX)
            .min(log.events.len());
        let end = start.saturating_add(limit).min(log.events.len());
        Ok(log.events[start..end]
            .iter()
            .map(|e| RecordedEvent::clone(e))
            .collect())
    }

    async fn count_after(&self, position: u64) -> StoreResult<u64> {
        // Positions are 1, 2, 3 … with no gaps here.
        let stored = self.inner.log.lock().events.len() as u64;
        Ok(stored.saturating_sub(position))
    }

    fn crash_safety(&self) -> CrashSafety {
        CrashSafety::ProcessMemory
    }

    async fn read_command(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> StoreResult<Vec<RecordedEvent>> {
        let Some(slot) = self.stream(stream) else {
            return Ok(Vec::new());
        };
        let first = command_event_id(stream, command_id, 0);
        // The derived id of the first event finds the command at once; otherwise scan.
        let found = {
            let log = self.inner.log.lock();
            log.ids
                .get(&first)
                .and_then(|&position| log.events.get(usize::try_from(position - 1).ok()?))
                .filter(|e| e.stream == *stream)
                .map(|e| e.version)
        };
        let recorded = slot.lock();
        let start = found.map_or(0, |version| {
            usize::try_from(version - 1)
                .unwrap_or(usize::MAX)
                .min(recorded.len())
        });
        Ok(recorded[start..]
            .iter()
            .filter(|e| e.command_id == Some(command_id))
            .map(|e| RecordedEvent::clone(e))
            .collect())
    }
}
