use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;

use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::event::{NewEvent, RecordedEvent, command_event_id};
use crate::event_store::{AppendReceipt, CrashSafety, EventStore, ReadQuery};
use crate::fence::Fence;
use crate::invalid_input::InvalidInput;
use crate::limits::{StoreLimits, check_event_type};
use crate::reminder::{DueReminders, ReminderChange, StoredReminder};
use crate::stream::StreamId;

use super::feed::Feed;
use super::ids::{EventIds, IdEntry};
use super::reminders::Reminders;
use super::row::{Place, Row};
use super::{Hasher, now_micros};

/// An event store held in process memory. Fast, and gone when the process ends.
#[derive(Default, Clone)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

/// One stream's events, and the number that stands for the stream in the id map.
struct StreamSlot {
    /// Unique in the store (streams are never removed): comparing numbers is comparing
    /// streams, and an id entry holds no reference counts of the stream's name.
    number: u64,
    /// The stream's id, shared by its rows.
    id: Arc<StreamId>,
    events: Mutex<Vec<Arc<Row>>>,
}

type Stream = Arc<StreamSlot>;

#[derive(Default)]
struct Inner {
    streams: DashMap<StreamId, Stream, Hasher>,
    /// The next [`StreamSlot::number`].
    next_stream: AtomicU64,
    /// Every event id: the store-wide uniqueness check, sharded (no store-wide lock).
    ids: EventIds,
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

    /// Records the ids of `append`'s events, or, when one is taken, records none and says why:
    /// the same command again on this stream, or an id in use elsewhere. Runs under the stream's
    /// lock, so a command's events on its own stream are either all stored or not claimed at
    /// all when a retry looks.
    fn claim_ids(&self, append: &LockedAppend<'_>) -> StoreResult<()> {
        for (index, event) in append.events.iter().enumerate() {
            let at = IdEntry {
                stream: append.slot.number,
                version: append.expected_version + index as u64 + 1,
            };
            let refusal = match self.inner.ids.claim(event.event_id, at) {
                Ok(()) => continue,
                Err(held) => append.id_taken(held, event),
            };
            for claimed in &append.events[..index] {
                self.inner.ids.release(&claimed.event_id);
            }
            return Err(refusal);
        }
        Ok(())
    }

    /// The refusal [`claim_ids`](Self::claim_ids) would give `append`, without claiming any id:
    /// for a call refused for another reason found after the ids are checked (a stale firing),
    /// so that it answers as if they had been. Runs under the stream's lock.
    fn check_ids(&self, append: &LockedAppend<'_>) -> StoreResult<()> {
        for event in append.events {
            if let Some(held) = self.inner.ids.get(&event.event_id) {
                return Err(append.id_taken(held, event));
            }
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
                    .or_insert_with(|| {
                        Arc::new(StreamSlot {
                            number: self.inner.next_stream.fetch_add(1, Ordering::Relaxed),
                            id: Arc::new(stream.clone()),
                            events: Mutex::default(),
                        })
                    })
                    .value(),
            ),
        }
    }

    /// Appends checked `events` (at least one) to the locked stream `recorded` (of `slot`) if it
    /// is at `expected_version` and their ids are free.
    fn append_locked(
        &self,
        recorded: &mut Vec<Arc<Row>>,
        slot: &StreamSlot,
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
        self.claim_ids(&LockedAppend {
            slot,
            recorded,
            stream,
            expected_version,
            events: &events,
        })?;
        // Every check has passed: from here the append cannot fail, so no position is wasted.
        let count = events.len() as u64;
        let first_position = self.inner.feed.reserve(count);
        let place = |offset: u64| Place {
            stream: &slot.id,
            version: expected_version + offset + 1,
            recorded_at,
            position: first_position + offset,
        };
        if count == 1 {
            // The common case: no batch to collect.
            for event in events {
                let stored = Arc::new(Row::new(event, place(0), recorded.last().map(|r| &**r)));
                self.inner
                    .feed
                    .fill(first_position, std::slice::from_ref(&stored));
                recorded.push(stored);
            }
        } else {
            let mut stored: Vec<Arc<Row>> = Vec::with_capacity(events.len());
            for (offset, event) in (0u64..).zip(events) {
                let previous = stored.last().or(recorded.last()).map(|r| &**r);
                stored.push(Arc::new(Row::new(event, place(offset), previous)));
            }
            self.inner.feed.fill(first_position, &stored);
            recorded.extend(stored);
        }
        Ok(AppendReceipt {
            first_version: expected_version + 1,
            last_version: expected_version + count,
            recorded_at,
            last_position: first_position + count - 1,
        })
    }

    /// [`StoreLimits::check_append`], without its set of ids for a single event (which cannot
    /// repeat an id): the same checks, in the same order, with the same errors.
    fn check_append(&self, events: &[NewEvent]) -> Result<(), InvalidInput> {
        let limits = &self.inner.limits;
        let [event] = events else {
            return limits.check_append(events);
        };
        if limits.max_events_per_append < 1 {
            return Err(InvalidInput::TooManyEvents {
                count: 1,
                max: limits.max_events_per_append,
            });
        }
        check_event_type(&event.event_type)?;
        if event.payload.len() > limits.max_event_payload_bytes {
            return Err(InvalidInput::PayloadTooLarge {
                what: "event payload",
                size: event.payload.len(),
                limit: limits.max_event_payload_bytes,
            });
        }
        limits.check_append_bytes(event.payload.len())
    }
}

/// An append under its stream's lock: `events`, to follow `expected_version` in `stream`,
/// whose stored events are `recorded`. What a taken event id is judged against.
struct LockedAppend<'a> {
    slot: &'a StreamSlot,
    recorded: &'a [Arc<Row>],
    stream: &'a StreamId,
    expected_version: u64,
    events: &'a [NewEvent],
}

impl LockedAppend<'_> {
    /// Why `event` cannot have its id, which `held` holds: the same command again on this
    /// stream, or an id in use elsewhere.
    fn id_taken(&self, held: IdEntry, event: &NewEvent) -> StoreError {
        match event.command_id {
            Some(command_id)
                if held.stream == self.slot.number
                    && self.command_at(held.version) == Some(command_id) =>
            {
                StoreError::CommandAlreadyApplied {
                    stream: self.stream.clone(),
                    command_id,
                }
            }
            _ => InvalidInput::DuplicateEventId(event.event_id).into(),
        }
    }

    /// The command id of the event at `version`: stored (`recorded`), or one of the `events`
    /// being appended. Every id entry of a stream is one or the other while its lock is held
    /// (a refused append takes its claims back before it lets go).
    fn command_at(&self, version: u64) -> Option<Uuid> {
        let index = |v: u64| usize::try_from(v).ok();
        match version.checked_sub(1).and_then(index) {
            Some(i) if i < self.recorded.len() => self.recorded[i].command_id,
            _ => version
                .checked_sub(self.expected_version + 1)
                .and_then(index)
                .and_then(|i| self.events.get(i))
                .and_then(|event| event.command_id),
        }
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
        self.check_append(&events)?;
        let slot = self.stream_or_new(stream);
        let mut recorded = slot.events.lock();
        self.append_locked(&mut recorded, &slot, stream, expected_version, events)
    }

    /// Checks everything first (fence, events, reminder changes), then, under the stream's
    /// lock, the version, the event ids and the firings' reminders, in the trait's order;
    /// stores the events, then applies the changes before the lock is released. The store has
    /// no shard owners: a fence is [`StoreError::Unsupported`], as for
    /// [`append_fenced`](EventStore::append_fenced).
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
            self.check_append(&events)?;
        }
        self.inner.limits.check_reminders(&reminders)?;
        let slot = self.stream_or_new(stream);
        let mut recorded = slot.events.lock();
        let actual = recorded.len() as u64;
        if actual != expected_version {
            return Err(StoreError::VersionConflict {
                stream: stream.clone(),
                expected: expected_version,
                actual,
            });
        }
        // A firing of a reminder changed since: refused before anything is stored. (The
        // stream's reminders change only under its lock, held until they are applied.) The
        // event ids come first, so a firing sent again after it was applied, stale by then,
        // learns that its command was applied. They are claimed only below, by the append: a
        // refusal's ids are read, never claimed and given back.
        let stale = self.inner.reminders.lock().check(stream, &reminders);
        if let Err(stale) = stale {
            self.check_ids(&LockedAppend {
                slot: &slot,
                recorded: &recorded,
                stream,
                expected_version,
                events: &events,
            })?;
            return Err(stale);
        }
        let receipt = if events.is_empty() {
            AppendReceipt {
                first_version: expected_version,
                last_version: expected_version,
                recorded_at: now_micros(),
                last_position: 0,
            }
        } else {
            self.append_locked(&mut recorded, &slot, stream, expected_version, events)?
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
        let _recorded = slot.as_ref().map(|slot| slot.events.lock());
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
        let recorded = slot.events.lock();
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
            .map(|e| e.to_event())
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        Ok(self
            .stream(stream)
            .map_or(0, |s| s.events.lock().len() as u64))
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
                    && !entry.value().events.lock().is_empty()
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
            .map(|e| e.to_event())
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
            .filter(|entry| entry.stream == slot.number)
            .map(|entry| entry.version);
        let recorded = slot.events.lock();
        let start = found.map_or(0, |version| {
            usize::try_from(version - 1)
                .unwrap_or(usize::MAX)
                .min(recorded.len())
        });
        Ok(recorded[start..]
            .iter()
            .filter(|e| e.command_id == Some(command_id))
            .map(|e| e.to_event())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_EVENT_TYPE_LEN;

    #[test]
    fn a_single_event_is_checked_exactly_as_the_limits_check_it() {
        let limits = [
            StoreLimits::default(),
            StoreLimits {
                max_event_payload_bytes: 3,
                max_events_per_append: 0,
                ..StoreLimits::default()
            },
            StoreLimits {
                max_event_payload_bytes: 3,
                ..StoreLimits::default()
            },
            StoreLimits {
                max_append_bytes: 2,
                ..StoreLimits::default()
            },
        ];
        let events = [
            NewEvent::new("E", 1, vec![1u8, 2, 3]),
            NewEvent::new("", 1, vec![1u8]),
            NewEvent::new("E".repeat(MAX_EVENT_TYPE_LEN), 1, Vec::new()),
            NewEvent::new("E".repeat(MAX_EVENT_TYPE_LEN + 1), 1, Vec::new()),
            NewEvent::new("E", 1, vec![0u8; 4]),
            NewEvent::new("", 1, vec![0u8; 4]),
            NewEvent::new("T\0", 1, vec![1u8]),
            NewEvent::new("T\n", 1, vec![0u8; 4]),
            NewEvent::new("T\u{85}", 1, Vec::new()),
        ];
        for limits in limits {
            let store = InMemoryEventStore::with_limits(limits);
            for event in &events {
                let one = std::slice::from_ref(event);
                assert_eq!(store.check_append(one), limits.check_append(one));
            }
        }
    }
}
