//! The event store contract.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreResult;
use crate::event::{NewEvent, RecordedEvent};
use crate::invalid_input::InvalidInput;
use crate::stream::StreamId;

/// Default number of events per page.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;

/// What an [`EventStore::read_stream`] call reads: one page of a stream, in version order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadQuery {
    /// Read events with a version strictly greater than this (0 = from the start).
    pub after_version: u64,
    /// Stop at this version (inclusive), if set.
    pub up_to_version: Option<u64>,
    /// Stop before the first event recorded after this instant, if set. Because `recorded_at`
    /// never decreases within a stream, this selects a prefix of the stream.
    pub up_to_time: Option<DateTime<Utc>>,
    /// Most events returned by one call.
    pub page_size: usize,
}

impl Default for ReadQuery {
    fn default() -> Self {
        Self {
            after_version: 0,
            up_to_version: None,
            up_to_time: None,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl ReadQuery {
    /// The whole stream from the start, in pages of [`DEFAULT_PAGE_SIZE`].
    pub fn all() -> Self {
        Self::default()
    }

    /// Events after `version`.
    pub fn after(version: u64) -> Self {
        Self {
            after_version: version,
            ..Self::default()
        }
    }

    /// Limits the read to versions up to and including `version`.
    pub fn up_to_version(mut self, version: u64) -> Self {
        self.up_to_version = Some(version);
        self
    }

    /// Limits the read to events recorded at or before `at`.
    pub fn up_to_time(mut self, at: DateTime<Utc>) -> Self {
        self.up_to_time = Some(at);
        self
    }

    /// Sets the page size.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// Refuses a zero page size.
    pub fn check(&self) -> Result<(), InvalidInput> {
        if self.page_size == 0 {
            return Err(InvalidInput::ZeroPageSize);
        }
        Ok(())
    }
}

/// What a successful append reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Version of the first appended event.
    pub first_version: u64,
    /// The stream's version after the append (the last appended event's version).
    pub last_version: u64,
    /// When the events were recorded (all events of one append share it).
    pub recorded_at: DateTime<Utc>,
    /// Store position of the last appended event.
    pub last_position: u64,
}

/// Whether an acknowledged append survives a crash, as far as the store can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashSafety {
    /// Events live in this process's memory and are gone when it ends.
    ProcessMemory,
    /// The server flushes every commit to disk before acknowledging it (for PostgreSQL:
    /// `fsync`, `synchronous_commit` and `full_page_writes` on).
    Durable,
    /// Acknowledged appends can be lost if the server crashes; the settings that say so.
    NotDurable(String),
    /// The store did not check (for example a PostgreSQL store made from an existing pool).
    Unknown,
}

/// An append-only store of event streams.
///
/// Implementations are object safe and shared as `Arc<dyn EventStore>`. Every implementation
/// passes the contract suite in `event_stores::contract` (feature `test-support`).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically (all or none) if the stream's current version
    /// is exactly `expected_version` (0 for a new stream). Otherwise fails with
    /// [`StoreError::VersionConflict`](crate::StoreError::VersionConflict) carrying the actual
    /// version, and stores nothing.
    ///
    /// Event ids are unique across the store. An event id that is already stored for the same
    /// command on the same stream fails the append with
    /// [`StoreError::CommandAlreadyApplied`](crate::StoreError::CommandAlreadyApplied); any other
    /// stored id with [`InvalidInput::DuplicateEventId`]. The version check comes first.
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt>;

    /// Reads one page of `stream` in version order, as bounded by `query`.
    async fn read_stream(
        &self,
        stream: &StreamId,
        query: ReadQuery,
    ) -> StoreResult<Vec<RecordedEvent>>;

    /// The stream's current version (0 when it has no events).
    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64>;

    /// Reads up to `limit` events of all streams with a position greater than
    /// `after_position`, in position order. An event is returned only once every event with
    /// a smaller position is visible too, so a reader that follows positions never skips one.
    /// The price is that an event may show up here a moment after its append returned (in
    /// PostgreSQL, once the transactions that started before it have ended).
    async fn read_all(&self, after_position: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>>;

    /// How many events [`read_all`](Self::read_all) would return after `position` if asked
    /// for all of them now: how far behind a reader at `position` is. The default pages through
    /// `read_all`; the backends count without reading the events.
    async fn count_after(&self, position: u64) -> StoreResult<u64> {
        let (mut after, mut count) = (position, 0u64);
        loop {
            let page = self.read_all(after, 10_000).await?;
            let Some(last) = page.last() else {
                return Ok(count);
            };
            after = last.position;
            count += page.len() as u64;
        }
    }

    /// Ids of the streams of `aggregate_type` that have events, in ascending byte order (the
    /// same on every backend, whatever a database's collation), after `after` (from the first
    /// when `None`), at most `limit`: pages through every aggregate of a type, e.g. to rebuild
    /// their snapshots. The default scans `read_all` (every event of
    /// the store per page); the backends read their stream index.
    async fn stream_ids(
        &self,
        aggregate_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let mut ids = std::collections::BTreeSet::new();
        let mut position = 0;
        loop {
            let page = self.read_all(position, 10_000).await?;
            let Some(last) = page.last() else {
                return Ok(ids.into_iter().collect());
            };
            position = last.position;
            for event in &page {
                let id = event.stream.aggregate_id();
                if event.stream.aggregate_type() == aggregate_type
                    && after.is_none_or(|after| id > after)
                    && !ids.contains(id)
                {
                    ids.insert(id.to_owned());
                    if ids.len() > limit {
                        ids.pop_last();
                    }
                }
            }
        }
    }

    /// The events command `command_id` stored in `stream`, in version order; empty when it
    /// stored none there. Cheap for events written with
    /// [`NewEvent::for_command`](crate::NewEvent::for_command) (a unique-index lookup of the
    /// first one, then a short range read); other events with that command id are found by
    /// scanning the stream.
    async fn read_command(
        &self,
        stream: &StreamId,
        command_id: uuid::Uuid,
    ) -> StoreResult<Vec<RecordedEvent>>;

    /// [`append`](Self::append), but only while `fence` is still the current ownership of its
    /// shard (see [`Fence`](crate::Fence)); otherwise fails with
    /// [`StoreError::Fenced`](crate::StoreError::Fenced) and stores nothing. Stores without
    /// shard owners answer [`StoreError::Unsupported`](crate::StoreError::Unsupported).
    async fn append_fenced(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        fence: &crate::Fence,
    ) -> StoreResult<AppendReceipt> {
        let _ = (stream, expected_version, events, fence);
        Err(crate::StoreError::Unsupported("fenced appends"))
    }

    /// The newest snapshot of `stream` in `snapshots` and the first page of events from that
    /// snapshot's own version on (from version 1 without a snapshot), at most `page_size`
    /// events, in one read: `Ok(None)` when this store cannot read `snapshots` itself (the
    /// default), and the caller reads both stores separately. PostgreSQL answers in one
    /// statement when the snapshot store shares its database
    /// ([`SnapshotStore::location`](crate::SnapshotStore::location)).
    async fn read_start(
        &self,
        stream: &StreamId,
        snapshots: &dyn crate::SnapshotStore,
        page_size: usize,
    ) -> StoreResult<Option<StreamStart>> {
        let _ = (stream, snapshots, page_size);
        Ok(None)
    }

    /// [`append`](Self::append) (or [`append_fenced`](Self::append_fenced) when `fence` is
    /// set) together with changes to the stream's reminders, in one transaction: after the
    /// same checks (expected version, fence, event ids), `events` are appended and `reminders`
    /// applied in order, or nothing is stored. `events` may be empty: then only the version
    /// (and fence) is checked, and the receipt's versions both equal `expected_version`
    /// (its position is 0 and its time the store's now); with no reminder changes either, the
    /// call is that check alone. A reminder scheduled under a fence records the fence's shard.
    ///
    /// The input is checked before anything is stored
    /// ([`StoreLimits::check_reminders`](crate::StoreLimits::check_reminders), and
    /// [`check_append`](crate::StoreLimits::check_append) when there are events). Calls that
    /// change one stream's reminders are serialised with each other, so changes are never
    /// applied on a version another such call has moved past. The refusals are an append's
    /// ([`StoreError::VersionConflict`](crate::StoreError::VersionConflict),
    /// [`StoreError::Fenced`](crate::StoreError::Fenced),
    /// [`StoreError::CommandAlreadyApplied`](crate::StoreError::CommandAlreadyApplied) and
    /// [`StoreError::InvalidInput`](crate::StoreError::InvalidInput)), and
    /// [`StoreError::StaleFiring`](crate::StoreError::StaleFiring) when a
    /// [`Fired`](crate::ReminderChange::Fired) change does not find its reminder as it fired.
    ///
    /// Every store checks in this order and answers with the first refusal:
    ///
    /// 1. the input (the limits above; a fence on a store without shard owners);
    /// 2. the fence ([`Fenced`](crate::StoreError::Fenced)), then the expected version
    ///    ([`VersionConflict`](crate::StoreError::VersionConflict));
    /// 3. the event ids, as [`append`](Self::append) checks them
    ///    ([`CommandAlreadyApplied`](crate::StoreError::CommandAlreadyApplied), or
    ///    [`InvalidInput::DuplicateEventId`] for an id stored outside the command);
    /// 4. the [`Fired`](crate::ReminderChange::Fired) preconditions, in the order of
    ///    `reminders` ([`StaleFiring`](crate::StoreError::StaleFiring)).
    ///
    /// So a firing sent again after its first attempt committed, which is stale by then (that
    /// attempt moved its reminder on, and it may have been replaced or cancelled since), is
    /// [`CommandAlreadyApplied`](crate::StoreError::CommandAlreadyApplied) as long as it
    /// carries its command's events: the retry learns that the command was applied, and
    /// [`read_command`](Self::read_command) returns what it stored. `StaleFiring` means the
    /// call's command was not stored, by this call or an earlier one (as far as its events'
    /// ids tell).
    ///
    /// Stores without reminders answer
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported), as do stores without shard
    /// owners given a fence (the in-memory store).
    async fn append_with_reminders(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        reminders: Vec<crate::ReminderChange>,
        fence: Option<&crate::Fence>,
    ) -> StoreResult<AppendReceipt> {
        let _ = (stream, expected_version, events, reminders, fence);
        Err(crate::StoreError::Unsupported("reminders"))
    }

    /// The reminders of `stream`, by name.
    async fn reminders_of(&self, stream: &StreamId) -> StoreResult<Vec<crate::StoredReminder>> {
        let _ = stream;
        Err(crate::StoreError::Unsupported("reminders"))
    }

    /// Reminders in state `Scheduled` due by `query.due_by`, earliest first, at most
    /// `query.limit`, of the shards asked for.
    async fn due_reminders(
        &self,
        query: &crate::DueReminders,
    ) -> StoreResult<Vec<crate::StoredReminder>> {
        let _ = query;
        Err(crate::StoreError::Unsupported("reminders"))
    }

    /// Whether acknowledged appends survive a crash (see [`CrashSafety`]).
    fn crash_safety(&self) -> CrashSafety {
        CrashSafety::Unknown
    }
}

/// What [`EventStore::read_start`] returns: where an activation starts.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStart {
    /// The newest snapshot, unchecked (the reader verifies it, as any loaded snapshot).
    pub snapshot: Option<crate::SnapshotRecord>,
    /// Events in version order from the snapshot's version (its own event first, for the
    /// `last_event_id` check), or from version 1 without a snapshot.
    pub events: Vec<RecordedEvent>,
}

/// Reads a stream page by page, so a long stream is never held in memory at once.
///
/// ```
/// # use event_stores::{InMemoryEventStore, EventStore, NewEvent, ReadQuery, StreamPages, StreamId};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = InMemoryEventStore::default();
/// let stream = StreamId::new("counter", "1")?;
/// let events = (0..5).map(|_| NewEvent::new("Incremented", 1, vec![])).collect();
/// store.append(&stream, 0, events).await?;
/// let mut pages = StreamPages::new(&store, &stream, ReadQuery::all().page_size(2));
/// let mut seen = 0;
/// while let Some(page) = pages.next_page().await? {
///     seen += page.len();
/// }
/// assert_eq!(seen, 5);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct StreamPages<'a, S: EventStore + ?Sized> {
    store: &'a S,
    stream: &'a StreamId,
    query: ReadQuery,
    done: bool,
}

impl<'a, S: EventStore + ?Sized> StreamPages<'a, S> {
    /// Starts reading `stream` as bounded by `query`.
    pub fn new(store: &'a S, stream: &'a StreamId, query: ReadQuery) -> Self {
        Self {
            store,
            stream,
            query,
            done: false,
        }
    }

    /// The next page, or `None` once the stream (or the query's bound) is exhausted.
    pub async fn next_page(&mut self) -> StoreResult<Option<Vec<RecordedEvent>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.read_stream(self.stream, self.query).await?;
        if page.len() < self.query.page_size {
            self.done = true;
        }
        match page.last() {
            Some(last) => {
                self.query.after_version = last.version;
                Ok(Some(page))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}
