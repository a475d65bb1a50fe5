use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::Mutex;

use uuid::Uuid;

use crate::error::{InvalidInput, StoreError, StoreResult};
use crate::event::{NewEvent, RecordedEvent, command_event_id};
use crate::event_store::{AppendReceipt, CrashSafety, EventStore, ReadQuery};
use crate::fence::Fence;
use crate::limits::StoreLimits;
use crate::reminder::{DueReminders, ReminderChange, StoredReminder};
use crate::stream::StreamId;

use super::feed::Feed;
use super::now_micros;
use super::reminders::Reminders;

/// An event store held in process memory. Fast, and gone when the process ends.
#[derive(Default, Clone)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

/// Hashing for the store's own maps: foldhash is several times faster than the standard
/// library's SipHash on 16-byte ids and short stream names, and keeps a random per-map seed.
pub(super) type Hasher = foldhash::fast::RandomState;

type Stream = Arc<Mutex<Vec<Arc<RecordedEvent>>>>;

/// Where a stored (or being stored) event id is: enough to tell a retried command from a
/// reused id, and to find a command's events in its stream.
struct IdEntry {
    stream: StreamId,
    version: u64,
    command_id: Option<Uuid>,
}

#[derive(Default)]
struct Inner {
    streams: DashMap<StreamId, Stream, Hasher>,
    /// Every event id: the store-wide uniqueness check, sharded (no store-wide lock).
    ids: DashMap<Uuid, IdEntry, Hasher>,
    /// Every event in position order.
    feed: Feed,
    /// Every stream's reminders: changed only under the stream's lock, and never by `append`.
    reminders: Mutex<Reminders>,
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

    /// Records the ids of `events` (about to be stored in `stream` after `expected_version`),
    /// or, when one is taken, records none and says why: the same command again on this stream,
    /// or an id in use elsewhere. Runs under the stream's lock, so a command's events on its own
    /// stream are either all stored or not claimed at all when a retry looks.
    fn claim_ids(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[NewEvent],
    ) -> StoreResult<()> {
        for (index, event) in events.iter().enumerate() {
            let refusal = match self.inner.ids.entry(event.event_id) {
                Entry::Vacant(vacant) => {
                    vacant.insert(IdEntry {
                        stream: stream.clone(),
                        version: expected_version + index as u64 + 1,
                        command_id: event.command_id,
                    });
                    continue;
                }
                Entry::Occupied(taken) => match (taken.get(), event.command_id) {
                    (held, Some(command_id))
                        if held.stream == *stream && held.command_id == Some(command_id) =>
                    {
                        StoreError::CommandAlreadyApplied {
                            stream: stream.clone(),
                            command_id,
                        }
                    }
                    _ => InvalidInput::DuplicateEventId(event.event_id).into(),
                },
            };
            for claimed in &events[..index] {
                self.inner.ids.remove(&claimed.event_id);
            }
            return Err(refusal);
        }
        Ok(())
    }

    fn stream(&self, stream: &StreamId) -> Option<Stream> {
        self.inner
            .streams
            .get(stream)
            .map(|s| Arc::clone(s.value()))
    }

    /// The stream's slot, made if it has none yet.
    fn stream_or_new(&self, stream: &StreamId) -> Stream {
        // A shared lookup first: only a stream's first write takes the shard's write lock.
        match self.stream(stream) {
            Some(slot) => slot,
            None => Arc::clone(
                self.inner
                    .streams
                    .entry(stream.clone())
                    .or_default()
                    .value(),
            ),
        }
    }

    /// Appends checked `events` (at least one) to the locked stream `recorded` if it is at
    /// `expected_version` and their ids are free.
    fn append_locked(
        &self,
        recorded: &mut Vec<Arc<RecordedEvent>>,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt> {
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
        self.claim_ids(stream, expected_version, &events)?;
        // Every check has passed: from here the append cannot fail, so no position is wasted.
        let count = events.len() as u64;
        let first_position = self.inner.feed.reserve(count);
        let stored: Vec<Arc<RecordedEvent>> = (0u64..)
            .zip(events)
            .map(|(offset, event)| {
                Arc::new(RecordedEvent {
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
                })
            })
            .collect();
        recorded.extend(stored.iter().cloned());
        self.inner.feed.fill(first_position, &stored);
        Ok(AppendReceipt {
            first_version: expected_version + 1,
            last_version: expected_version + count,
            recorded_at,
            last_position: first_position + count - 1,
        })
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
        let slot = self.stream_or_new(stream);
        let mut recorded = slot.lock();
        self.append_locked(&mut recorded, stream, expected_version, events)
    }

    /// Checks everything first (fence, events, reminder changes), then, under the stream's
    /// lock, the version and the event ids; stores the events, then applies the changes before
    /// the lock is released. The store has no shard owners: a fence is
    /// [`StoreError::Unsupported`], as for [`append_fenced`](EventStore::append_fenced).
    async fn append_with_reminders(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        reminders: Vec<ReminderChange>,
        fence: Option<&Fence>,
    ) -> StoreResult<AppendReceipt> {
        if fence.is_some() {
            return Err(StoreError::Unsupported("fenced appends"));
        }
        if !events.is_empty() {
            self.inner.limits.check_append(&events)?;
        }
        self.inner.limits.check_reminders(&reminders)?;
        let slot = self.stream_or_new(stream);
        let mut recorded = slot.lock();
        let receipt = if events.is_empty() {
            let actual = recorded.len() as u64;
            if actual != expected_version {
                return Err(StoreError::VersionConflict {
                    stream: stream.clone(),
                    expected: expected_version,
                    actual,
                });
            }
            AppendReceipt {
                first_version: expected_version,
                last_version: expected_version,
                recorded_at: now_micros(),
                last_position: 0,
            }
        } else {
            self.append_locked(&mut recorded, stream, expected_version, events)?
        };
        if !reminders.is_empty() {
            self.inner.reminders.lock().apply(stream, reminders);
        }
        drop(recorded);
        Ok(receipt)
    }

    async fn reminders_of(&self, stream: &StreamId) -> StoreResult<Vec<StoredReminder>> {
        // Under the stream's lock, like a write: never half of a call's changes.
        let slot = self.stream(stream);
        let _recorded = slot.as_ref().map(|slot| slot.lock());
        Ok(self.inner.reminders.lock().of(stream))
    }

    async fn due_reminders(&self, query: &DueReminders) -> StoreResult<Vec<StoredReminder>> {
        Ok(self.inner.reminders.lock().due(query))
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

    async fn stream_ids(
        &self,
        aggregate_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let mut ids: Vec<String> = self
            .inner
            .streams
            .iter()
            .filter(|entry| {
                let stream = entry.key();
                stream.aggregate_type() == aggregate_type
                    && after.is_none_or(|after| stream.aggregate_id() > after)
                    && !entry.value().lock().is_empty()
            })
            .map(|entry| entry.key().aggregate_id().to_owned())
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        Ok(self
            .inner
            .feed
            .read(after_position, limit)
            .iter()
            .map(|e| RecordedEvent::clone(e))
            .collect())
    }

    async fn count_after(&self, position: u64) -> StoreResult<u64> {
        Ok(self.inner.feed.count_after(position))
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
        let found = self
            .inner
            .ids
            .get(&first)
            .filter(|entry| entry.stream == *stream)
            .map(|entry| entry.version);
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
