//! The PostgreSQL event store.
//!
//! Appends are in [`append`](super::append) (one at a time) and
//! [`group_commit`](super::group_commit) (many in one statement).
//!
//! # Positions and `read_all`
//!
//! A sequence would hand out positions in the order statements *start*, but transactions commit
//! in another order: a reader that saw position 11 committed could move past position 10, still
//! in flight, and never see it. Filtering on "transaction id below the oldest running
//! transaction" (`pg_snapshot_xmin`) is not enough on its own either, because a transaction can
//! take its id before another one and its sequence value after it.
//!
//! So the position *is* derived from the writing transaction: `position = (txid << 16) + i`, `i`
//! being the event's index in its append (hence at most 65 536 events per append). Transaction
//! ids are handed out in increasing order and every transaction that can still commit has an id
//! at or above `xmin`, the oldest running one. `read_all` returns only positions below
//! `xmin << 16`; every transaction below that has already committed or aborted, so nothing can
//! later appear below a position a reader has passed. Positions are increasing but sparse. The
//! cost: a transaction that stays open anywhere on the server (also in other databases) holds
//! `read_all` back until it ends; appends and stream reads are unaffected.
//!
//! Positions therefore belong to the server's transaction counter. `pg_upgrade` and physical
//! replicas keep it; `pg_dump` and restore, or a logical-replication cutover, into another
//! cluster do not: there new appends would get positions below the stored ones (a projection
//! that passed them would never see the new events) or equal to them (refused as conflicts).
//! [`PgEventStore::connect`] and [`PgEventStore::from_pool`] refuse such a database with
//! [`StoreError::Corrupt`]; move a store with [`backup`](crate::backup) instead, which assigns
//! positions anew.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::event::{NewEvent, RecordedEvent, command_event_id};
use crate::event_store::{AppendReceipt, CrashSafety, EventStore, ReadQuery, StreamStart};
use crate::fence::Fence;
use crate::limits::StoreLimits;
use crate::reminder::{DueReminders, ReminderChange, StoredReminder};
use crate::snapshot_store::SnapshotStore;
use crate::stream::StreamId;

use super::append::{Append, Appender};
use super::batcher::{BatchStats, Statement};
use super::config::{DEFAULT_CLIENT_TIMEOUT, GroupCommit, PgConfig, migrate};
use super::durability::Durability;
use super::error::map_sqlx;
use super::group_commit::{AppendBatcher, AppendStatement, GroupCommitStats};
use super::rows::{decode_event, to_u64};
use super::start::{StartBatcher, StartRead, StartStatement};

pub use super::rows::PG_MAX_EVENTS_PER_APPEND;

const READ_STREAM: &str = r#"
SELECT version, event_id, event_type, schema_version, payload, correlation_id, causation_id,
       recorded_at, position, command_id, trace_parent
FROM events
WHERE aggregate_type = $1::text AND aggregate_id = $2::text
  AND version > $3::bigint AND version <= $4::bigint
  AND ($5::timestamptz IS NULL OR recorded_at <= $5::timestamptz)
ORDER BY version
LIMIT $6::bigint
"#;

// The bound is an index range on `position`: see the module documentation.
/// What `READ_ALL` would return after `$1` with no limit, counted.
const COUNT_AFTER: &str = r#"
SELECT COUNT(*) FROM events
WHERE position > $1::bigint
  AND position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 16)
"#;

/// In id order along the primary key (aggregate_type, aggregate_id, version), so a page reads
/// only the rows of the streams it returns.
const STREAM_IDS: &str = r#"
SELECT DISTINCT aggregate_id FROM events
WHERE aggregate_type = $1 AND aggregate_id > $2
ORDER BY aggregate_id
LIMIT $3
"#;

const READ_ALL: &str = r#"
SELECT version, event_id, event_type, schema_version, payload, correlation_id, causation_id,
       recorded_at, position, command_id, trace_parent, aggregate_type, aggregate_id
FROM events
WHERE position > $1::bigint
  AND position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 16)
ORDER BY position
LIMIT $2::bigint
"#;

// The derived id of the command's first event ($4) finds where its events start through the
// unique index; without it (events not written with derived ids) the stream is scanned.
const READ_COMMAND: &str = r#"
SELECT version, event_id, event_type, schema_version, payload, correlation_id, causation_id,
       recorded_at, position, command_id, trace_parent
FROM events
WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND command_id = $3::uuid
  AND version >= COALESCE((SELECT version FROM events
                           WHERE event_id = $4::uuid
                             AND aggregate_type = $1::text AND aggregate_id = $2::text), 1)
ORDER BY version
"#;

/// An [`EventStore`] on PostgreSQL. Cheap to clone: clones share the pool.
///
/// ```no_run
/// # async fn demo() -> event_stores::StoreResult<()> {
/// use event_stores::{EventStore, NewEvent, PgConfig, PgEventStore, StreamId};
///
/// let store = PgEventStore::connect(&PgConfig::new("postgres://postgres@localhost/app")).await?;
/// let stream = StreamId::new("account", "acc-1")?;
/// store.append(&stream, 0, vec![NewEvent::new("Opened", 1, vec![1, 2, 3])]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgEventStore {
    pool: PgPool,
    limits: StoreLimits,
    durability: Option<Durability>,
    appender: Appender,
    batcher: Option<Arc<AppendBatcher>>,
    /// Activation reads, batched like appends when group commit is on.
    reader: Option<Arc<StartBatcher>>,
    /// Where the events are (server and database), to recognise a snapshot store that shares
    /// the database and read both in one statement.
    location: String,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("limits", &self.limits)
            .field("durability", &self.durability)
            .field("client_timeout", &self.appender.client_timeout)
            .field("group_commit", &self.group_commit())
            .finish_non_exhaustive()
    }
}

/// Refuses a database whose stored positions come from a transaction counter ahead of this
/// server's (see the module documentation: the events were copied from another cluster).
async fn check_transaction_counter(pool: &PgPool) -> StoreResult<()> {
    // The snapshot's xmax is the next transaction id; reading it assigns none.
    let (newest, next): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT max(position) FROM events) >> 16,
                pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| map_sqlx("reading the transaction counter", e))?;
    match newest {
        Some(newest) if newest >= next => Err(StoreError::Corrupt(format!(
            "stored events hold positions of transaction {newest}, but this server's next \
             transaction is {next}: they were copied from another PostgreSQL cluster (pg_dump, \
             logical replication), and new appends would get positions below theirs, which \
             readers of read_all would skip; move an event store with event_stores::backup, \
             which assigns positions anew"
        ))),
        _ => Ok(()),
    }
}

impl PgEventStore {
    /// Opens a pool as `config` says, migrates the schema (unless turned off) and returns the
    /// store. Fails with [`StoreError::Unavailable`] when the server cannot be reached in time.
    pub async fn connect(config: &PgConfig) -> StoreResult<Self> {
        let pool = config.connect_pool().await?;
        check_transaction_counter(&pool).await?;
        let durability = config.check_durability(&pool).await?;
        let store = Self {
            durability: Some(durability),
            ..Self::with_migrated_pool(pool, config.limits)
        };
        Ok(store
            .with_client_timeout(config.client_timeout())
            .with_group_commit(config.group_commit))
    }

    /// A store on an existing pool (for example one shared with a [`PgSnapshotStore`]). Runs the
    /// migrations first; they are idempotent and cheap when already applied.
    ///
    /// [`PgSnapshotStore`]: super::PgSnapshotStore
    pub async fn from_pool(pool: PgPool, limits: StoreLimits) -> StoreResult<Self> {
        migrate(&pool).await?;
        check_transaction_counter(&pool).await?;
        Ok(Self::with_migrated_pool(pool, limits))
    }

    /// A store on a pool whose database already has the schema (see
    /// [`migrate`](super::migrate)); does no I/O. Group commit is on with its defaults.
    pub fn with_migrated_pool(pool: PgPool, mut limits: StoreLimits) -> Self {
        limits.max_events_per_append = limits.max_events_per_append.min(PG_MAX_EVENTS_PER_APPEND);
        let appender = Appender {
            pool: pool.clone(),
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
        };
        Self {
            location: super::connection::location(&pool),
            pool,
            limits,
            durability: None,
            batcher: None,
            reader: None,
            appender,
        }
        .with_group_commit(GroupCommit::default())
    }

    /// Sets how long an append may wait for the server's answer after sending its statement
    /// before the connection is closed and the append reported
    /// [`StoreError::Indeterminate`]. [`connect`](Self::connect) takes it from
    /// [`PgConfig::client_timeout`].
    pub fn with_client_timeout(mut self, timeout: Duration) -> Self {
        self.appender.client_timeout = timeout;
        let settings = self.group_commit();
        self.with_group_commit(settings)
    }

    /// Sets how concurrent appends share statements (see [`GroupCommit`]);
    /// [`connect`](Self::connect) takes it from [`PgConfig::group_commit`]. Appends already
    /// queued are still sent by the store they were made on.
    pub fn with_group_commit(mut self, settings: GroupCommit) -> Self {
        self.batcher = settings.enabled.then(|| {
            Arc::new(AppendStatement::batcher(
                self.appender.clone(),
                settings,
                self.durability.as_ref(),
            ))
        });
        self.reader = settings
            .enabled
            .then(|| Arc::new(StartStatement::batcher(&self.appender, settings.linger)));
        self
    }

    /// The group-commit settings in force (`enabled: false` when appends go one by one).
    pub fn group_commit(&self) -> GroupCommit {
        match &self.batcher {
            Some(batcher) => batcher.statement().settings,
            None => GroupCommit {
                enabled: false,
                ..GroupCommit::default()
            },
        }
    }

    /// How activation reads ([`EventStore::read_start`]) were batched so far on this store and
    /// its clones (all zero when group commit is off, which turns this batching off too).
    pub fn activation_read_stats(&self) -> BatchStats {
        self.reader
            .as_ref()
            .map_or_else(BatchStats::default, |r| r.counters().stats())
    }

    /// What group commit did so far on this store and its clones (all zero when it is off).
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.batcher
            .as_ref()
            .map_or_else(GroupCommitStats::default, |b| super::group_commit::stats(b))
    }

    /// The server's durability settings as read by [`connect`](Self::connect) (`None` for a
    /// store made from a pool, which reads nothing).
    pub fn server_durability(&self) -> Option<&Durability> {
        self.durability.as_ref()
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The limits in force (`max_events_per_append` is capped at [`PG_MAX_EVENTS_PER_APPEND`]).
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Closes the pool: waits for connections in use to come back, then closes all of them.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks an append and sends it: through the group-commit queue when it is on, alone
    /// otherwise.
    async fn submit(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        fence: Option<&Fence>,
    ) -> StoreResult<AppendReceipt> {
        self.limits.check_append(&events)?;
        let Ok(expected) = i64::try_from(expected_version) else {
            // No stream is that long: the caller is ahead of whatever is stored.
            return Err(self.appender.conflict(stream, expected_version).await);
        };
        let append = Append {
            stream: stream.clone(),
            expected,
            events,
            fence: fence.copied(),
        };
        match &self.batcher {
            Some(batcher) => batcher.call(append).await,
            None => self.appender.one(&mut None, &append).await,
        }
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    #[tracing::instrument(level = "debug", name = "pg.append", skip_all, fields(stream = %stream, expected = expected_version, events = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt> {
        self.submit(stream, expected_version, events, None).await
    }

    #[tracing::instrument(level = "debug", name = "pg.append_fenced", skip_all, fields(stream = %stream, expected = expected_version, events = events.len(), shard = fence.shard, epoch = fence.epoch))]
    async fn append_fenced(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        fence: &Fence,
    ) -> StoreResult<AppendReceipt> {
        self.submit(stream, expected_version, events, Some(fence))
            .await
    }

    #[tracing::instrument(level = "debug", name = "pg.read_stream", skip_all, fields(stream = %stream))]
    async fn read_stream(
        &self,
        stream: &StreamId,
        query: ReadQuery,
    ) -> StoreResult<Vec<RecordedEvent>> {
        query.check()?;
        let Ok(after) = i64::try_from(query.after_version) else {
            return Ok(Vec::new());
        };
        let up_to = query
            .up_to_version
            .map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
        if up_to <= after {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(query.page_size).unwrap_or(i64::MAX);
        let rows = self
            .appender
            .read("reading a stream", async |conn| {
                sqlx::query(READ_STREAM)
                    .bind(stream.aggregate_type())
                    .bind(stream.aggregate_id())
                    .bind(after)
                    .bind(up_to)
                    .bind(query.up_to_time)
                    .bind(limit)
                    .fetch_all(conn)
                    .await
            })
            .await?;
        rows.iter()
            .map(|row| decode_event(row, stream.clone()))
            .collect()
    }

    #[tracing::instrument(level = "debug", name = "pg.stream_version", skip_all, fields(stream = %stream))]
    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        self.appender.stream_version(stream).await
    }

    #[tracing::instrument(level = "debug", name = "pg.count_after", skip(self))]
    async fn count_after(&self, position: u64) -> StoreResult<u64> {
        let Ok(after) = i64::try_from(position) else {
            return Ok(0);
        };
        let count: i64 = self
            .appender
            .read("counting events after a position", async |conn| {
                sqlx::query_scalar(COUNT_AFTER)
                    .bind(after)
                    .fetch_one(conn)
                    .await
            })
            .await?;
        to_u64(count, "count")
    }

    #[tracing::instrument(level = "debug", name = "pg.stream_ids", skip(self))]
    async fn stream_ids(
        &self,
        aggregate_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.appender
            .read("listing stream ids", async |conn| {
                sqlx::query_scalar(STREAM_IDS)
                    .bind(aggregate_type)
                    .bind(after.unwrap_or(""))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(conn)
                    .await
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "pg.read_all", skip(self))]
    async fn read_all(&self, after_position: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        let Ok(after) = i64::try_from(after_position) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .appender
            .read("reading all streams", async |conn| {
                sqlx::query(READ_ALL)
                    .bind(after)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(conn)
                    .await
            })
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        let mut last_stream: Option<StreamId> = None;
        for row in &rows {
            let decode = |e| map_sqlx("reading all streams", e);
            let aggregate_type: &str = row.try_get(11).map_err(decode)?;
            let aggregate_id: &str = row.try_get(12).map_err(decode)?;
            // Consecutive events mostly share a stream; reuse its id instead of reallocating.
            let stream = match last_stream.take() {
                Some(s)
                    if s.aggregate_type() == aggregate_type && s.aggregate_id() == aggregate_id =>
                {
                    s
                }
                _ => StreamId::new(aggregate_type, aggregate_id).map_err(|e| {
                    StoreError::Corrupt(format!("stored stream id is invalid: {e}"))
                })?,
            };
            events.push(decode_event(row, stream.clone())?);
            last_stream = Some(stream);
        }
        Ok(events)
    }

    #[tracing::instrument(level = "debug", name = "pg.read_start", skip_all, fields(stream = %stream, page_size = page_size))]
    async fn read_start(
        &self,
        stream: &StreamId,
        snapshots: &dyn SnapshotStore,
        page_size: usize,
    ) -> StoreResult<Option<StreamStart>> {
        if snapshots.location().as_deref() != Some(self.location.as_str()) {
            return Ok(None);
        }
        let read = StartRead {
            stream: stream.clone(),
            page_size,
        };
        match &self.reader {
            Some(reader) => reader.call(read).await.map(Some),
            None => StartStatement {
                pool: self.pool.clone(),
                client_timeout: self.appender.client_timeout,
            }
            .send(&mut None, std::slice::from_ref(&read))
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(StoreError::Backend {
                    message: "an activation read returned no outcome".into(),
                    source: None,
                })
            })
            .map(Some),
        }
    }

    /// One transaction on a pooled connection, never group-committed (see the module
    /// `reminders`): the stream's reminder lock, the append (or, without events, the version
    /// and fence check), the changes in order, `COMMIT`.
    #[tracing::instrument(level = "debug", name = "pg.append_with_reminders", skip_all, fields(stream = %stream, expected = expected_version, events = events.len(), reminders = reminders.len(), shard = fence.map(|f| f.shard), epoch = fence.map(|f| f.epoch)))]
    async fn append_with_reminders(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        reminders: Vec<ReminderChange>,
        fence: Option<&Fence>,
    ) -> StoreResult<AppendReceipt> {
        if !events.is_empty() {
            self.limits.check_append(&events)?;
        }
        self.limits.check_reminders(&reminders)?;
        let shard = match fence {
            Some(fence) => super::append::fence_params(fence)?.0,
            None => 0,
        };
        let Ok(expected) = i64::try_from(expected_version) else {
            // No stream is that long: the caller is ahead of whatever is stored.
            return Err(self.appender.conflict(stream, expected_version).await);
        };
        let append = Append {
            stream: stream.clone(),
            expected,
            events,
            fence: fence.copied(),
        };
        super::reminders::write(&self.appender, &append, &reminders, shard).await
    }

    #[tracing::instrument(level = "debug", name = "pg.reminders_of", skip_all, fields(stream = %stream))]
    async fn reminders_of(&self, stream: &StreamId) -> StoreResult<Vec<StoredReminder>> {
        super::reminder_reads::reminders_of(&self.appender, stream).await
    }

    #[tracing::instrument(level = "debug", name = "pg.due_reminders", skip_all, fields(due_by = %query.due_by, limit = query.limit, shards = query.shards.as_ref().map(Vec::len)))]
    async fn due_reminders(&self, query: &DueReminders) -> StoreResult<Vec<StoredReminder>> {
        super::reminder_reads::due(&self.appender, query).await
    }

    fn crash_safety(&self) -> CrashSafety {
        match &self.durability {
            Some(durability) if durability.survives_server_crash() => CrashSafety::Durable,
            Some(durability) => CrashSafety::NotDurable(durability.to_string()),
            None => CrashSafety::Unknown,
        }
    }

    #[tracing::instrument(level = "debug", name = "pg.read_command", skip_all, fields(stream = %stream, command_id = %command_id))]
    async fn read_command(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> StoreResult<Vec<RecordedEvent>> {
        let rows = self
            .appender
            .read("reading a command's events", async |conn| {
                sqlx::query(READ_COMMAND)
                    .bind(stream.aggregate_type())
                    .bind(stream.aggregate_id())
                    .bind(command_id)
                    .bind(command_event_id(stream, command_id, 0))
                    .fetch_all(conn)
                    .await
            })
            .await?;
        rows.iter()
            .map(|row| decode_event(row, stream.clone()))
            .collect()
    }
}
