//! The PostgreSQL event store.
//!
//! # Appends
//!
//! An append is one statement, so one round trip once the statement is prepared on the
//! connection: a CTE reads the stream's head (its last version and `recorded_at`, a backward scan
//! of the primary key), and `INSERT … SELECT … FROM UNNEST(…) WITH ORDINALITY … WHERE head = $expected`
//! writes every event or none. The statement returns the head it saw, so a refused append
//! reports the actual version without a second query. Two appenders that both saw the same head
//! race on the primary key `(aggregate_type, aggregate_id, version)`: the loser waits for the
//! winner's commit, gets a unique violation and reports a version conflict.
//!
//! `recorded_at` is `GREATEST(now(), the stream's last recorded_at)`, so it never decreases
//! within a stream even if the server clock steps back, and `up_to_time` reads are a prefix.
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

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use uuid::Uuid;

use crate::error::{InvalidInput, StoreError, StoreResult};
use crate::event::{EventMetadata, NewEvent, RecordedEvent, command_event_id};
use crate::event_store::{AppendReceipt, CrashSafety, EventStore, ReadQuery};
use crate::fence::Fence;
use crate::limits::StoreLimits;
use crate::stream::StreamId;

use super::config::{DEFAULT_CLIENT_TIMEOUT, PgConfig, migrate};
use super::durability::Durability;
use super::error::{UNIQUE_VIOLATION, constraint, is_lost_in_flight, map_sqlx, sqlstate};

/// Most events one append can carry in this backend: positions keep 16 bits for the event's
/// index within its transaction.
pub const PG_MAX_EVENTS_PER_APPEND: usize = 1 << 16;

/// The append statement; the fenced variant adds a share-locked read of the shard's ownership
/// row and inserts only when it still names the fence's owner and epoch.
macro_rules! append_sql {
    ($fence_cte:literal, $fence_condition:literal, $fence_ok:literal) => {
        concat!(
            "WITH ",
            $fence_cte,
            r#"last AS (
    SELECT version, recorded_at FROM events
    WHERE aggregate_type = $1::text AND aggregate_id = $2::text
    ORDER BY version DESC
    LIMIT 1
), head AS (
    SELECT COALESCE((SELECT version FROM last), 0) AS version,
           GREATEST(now(), (SELECT recorded_at FROM last)) AS recorded_at,
           pg_current_xact_id()::text::bigint AS tx
), ins AS (
    INSERT INTO events (aggregate_type, aggregate_id, version, event_id, event_type,
                        schema_version, payload, correlation_id, causation_id, recorded_at,
                        position, command_id)
    SELECT $1::text, $2::text, head.version + e.n, e.event_id, e.event_type,
           e.schema_version, e.payload, e.correlation_id, e.causation_id, head.recorded_at,
           (head.tx << 16) + e.n - 1, e.command_id
    FROM head,
         UNNEST($4::uuid[], $5::text[], $6::int4[], $7::bytea[], $8::uuid[], $9::uuid[],
                $10::uuid[])
             WITH ORDINALITY AS e(event_id, event_type, schema_version, payload,
                                  correlation_id, causation_id, command_id, n)
    WHERE head.version = $3::bigint "#,
            $fence_condition,
            r#"
    ORDER BY e.n
    RETURNING version, position, recorded_at
)
SELECT head.version, COUNT(ins.version), MAX(ins.version), MAX(ins.position),
       MAX(ins.recorded_at), "#,
            $fence_ok,
            r#"
FROM head LEFT JOIN ins ON TRUE
GROUP BY head.version
"#
        )
    };
}

const APPEND: &str = append_sql!("", "", "TRUE");

// Under read committed, FOR SHARE either takes the row first (a takeover's UPDATE then waits
// for this append to commit) or waits for a takeover in progress and re-checks the row it
// committed, which no longer matches: the append is fenced.
const APPEND_FENCED: &str = append_sql!(
    r#"fence AS (
    SELECT epoch FROM shard_owners
    WHERE shard = $11::int AND owner = $12::uuid AND epoch = $13::bigint
    FOR SHARE
), "#,
    "AND EXISTS (SELECT 1 FROM fence)",
    "EXISTS (SELECT 1 FROM fence)"
);

const READ_STREAM: &str = r#"
SELECT version, event_id, event_type, schema_version, payload, correlation_id, causation_id,
       recorded_at, position, command_id
FROM events
WHERE aggregate_type = $1::text AND aggregate_id = $2::text
  AND version > $3::bigint AND version <= $4::bigint
  AND ($5::timestamptz IS NULL OR recorded_at <= $5::timestamptz)
ORDER BY version
LIMIT $6::bigint
"#;

const STREAM_VERSION: &str = r#"
SELECT version FROM events
WHERE aggregate_type = $1::text AND aggregate_id = $2::text
ORDER BY version DESC
LIMIT 1
"#;

// The bound is an index range on `position`: see the module documentation.
const READ_ALL: &str = r#"
SELECT version, event_id, event_type, schema_version, payload, correlation_id, causation_id,
       recorded_at, position, command_id, aggregate_type, aggregate_id
FROM events
WHERE position > $1::bigint
  AND position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 16)
ORDER BY position
LIMIT $2::bigint
"#;

const FIND_EVENT_IDS: &str = r#"
SELECT event_id, aggregate_type, aggregate_id, command_id FROM events
WHERE event_id = ANY($1::uuid[])
LIMIT 1
"#;

// The derived id of the command's first event ($4) finds where its events start through the
// unique index; without it (events not written with derived ids) the stream is scanned.
const READ_COMMAND: &str = r#"
SELECT version, event_id, event_type, schema_version, payload, correlation_id, causation_id,
       recorded_at, position, command_id
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
#[derive(Clone, Debug)]
pub struct PgEventStore {
    pool: PgPool,
    limits: StoreLimits,
    client_timeout: Duration,
    durability: Option<Durability>,
}

impl PgEventStore {
    /// Opens a pool as `config` says, migrates the schema (unless turned off) and returns the
    /// store. Fails with [`StoreError::Unavailable`] when the server cannot be reached in time.
    pub async fn connect(config: &PgConfig) -> StoreResult<Self> {
        let pool = config.connect_pool().await?;
        let durability = config.check_durability(&pool).await?;
        Ok(Self {
            client_timeout: config.client_timeout(),
            durability: Some(durability),
            ..Self::with_migrated_pool(pool, config.limits)
        })
    }

    /// A store on an existing pool (for example one shared with a [`PgSnapshotStore`]). Runs the
    /// migrations first; they are idempotent and cheap when already applied.
    ///
    /// [`PgSnapshotStore`]: super::PgSnapshotStore
    pub async fn from_pool(pool: PgPool, limits: StoreLimits) -> StoreResult<Self> {
        migrate(&pool).await?;
        Ok(Self::with_migrated_pool(pool, limits))
    }

    /// A store on a pool whose database already has the schema (see
    /// [`migrate`](super::migrate)); does no I/O.
    pub fn with_migrated_pool(pool: PgPool, mut limits: StoreLimits) -> Self {
        limits.max_events_per_append = limits.max_events_per_append.min(PG_MAX_EVENTS_PER_APPEND);
        Self {
            pool,
            limits,
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
            durability: None,
        }
    }

    /// Sets how long an append may wait for the server's answer after sending its statement
    /// before the connection is closed and the append reported
    /// [`StoreError::Indeterminate`]. [`connect`](Self::connect) takes it from
    /// [`PgConfig::client_timeout`].
    pub fn with_client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout;
        self
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

    /// One append statement, fenced or not: acquire, send (bounded by the client timeout),
    /// classify the outcome.
    async fn append_checked(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        fence: Option<&Fence>,
    ) -> StoreResult<AppendReceipt> {
        self.limits.check_append(&events)?;

        let Ok(expected) = i64::try_from(expected_version) else {
            // No stream is that long: the caller is ahead of whatever is stored.
            return Err(self.conflict(stream, expected_version).await);
        };

        let count = events.len();
        let mut ids = Vec::with_capacity(count);
        let mut types = Vec::with_capacity(count);
        let mut schema_versions = Vec::with_capacity(count);
        let mut payloads = Vec::with_capacity(count);
        let mut correlations = Vec::with_capacity(count);
        let mut causations = Vec::with_capacity(count);
        let mut commands = Vec::with_capacity(count);
        for event in &events {
            ids.push(event.event_id);
            types.push(event.event_type.as_str());
            // Bit-cast: INT holds every u32 this way, and reads cast back.
            schema_versions.push(event.schema_version as i32);
            payloads.push(event.payload.as_ref());
            correlations.push(event.metadata.correlation_id);
            causations.push(event.metadata.causation_id);
            commands.push(event.command_id);
        }

        // Acquire first: until the statement is sent, a failure means nothing was written.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| map_sqlx("acquiring a connection to append", e))?;
        let query = sqlx::query(if fence.is_some() {
            APPEND_FENCED
        } else {
            APPEND
        })
        .bind(stream.aggregate_type())
        .bind(stream.aggregate_id())
        .bind(expected)
        .bind(&ids)
        .bind(&types)
        .bind(&schema_versions)
        .bind(&payloads)
        .bind(&correlations)
        .bind(&causations)
        .bind(&commands);
        let query = match fence {
            Some(fence) => query
                .bind(i32::try_from(fence.shard).map_err(|_| {
                    InvalidInput::BadVersion(format!("shard {} is out of range", fence.shard))
                })?)
                .bind(fence.owner)
                .bind(i64::try_from(fence.epoch).map_err(|_| {
                    InvalidInput::BadVersion(format!("epoch {} is out of range", fence.epoch))
                })?),
            None => query,
        }
        .fetch_one(&mut *conn);
        let result = match tokio::time::timeout(self.client_timeout, query).await {
            Ok(result) => result,
            Err(_) => {
                // A stalled server or black-holed network: the statement may still commit.
                // The connection is in an unknown state, so it must not serve anyone else.
                conn.close_on_drop();
                return Err(StoreError::Indeterminate {
                    message: format!(
                        "append to {stream}: no answer from the server within {:?}",
                        self.client_timeout
                    ),
                    source: None,
                });
            }
        };
        drop(conn);
        let row = match result {
            Ok(row) => row,
            Err(err) if sqlstate(&err).as_deref() == Some(UNIQUE_VIOLATION) => {
                return Err(self
                    .unique_violation(stream, expected_version, &ids, &events, err)
                    .await);
            }
            Err(err) if is_lost_in_flight(&err) => {
                return Err(StoreError::Indeterminate {
                    message: format!("append to {stream}: connection lost after sending: {err}"),
                    source: Some(Box::new(err)),
                });
            }
            Err(err) => return Err(map_sqlx("appending", err)),
        };

        let decode = |e| map_sqlx("reading the append result", e);
        let current: i64 = row.try_get(0).map_err(decode)?;
        let inserted: i64 = row.try_get(1).map_err(decode)?;
        let fence_held: bool = row.try_get(5).map_err(decode)?;
        if let (Some(fence), false) = (fence, fence_held) {
            return Err(StoreError::Fenced {
                stream: stream.clone(),
                shard: fence.shard,
                epoch: fence.epoch,
            });
        }
        if inserted == 0 {
            return Err(StoreError::VersionConflict {
                stream: stream.clone(),
                expected: expected_version,
                actual: to_u64(current, "version")?,
            });
        }
        let last_version: Option<i64> = row.try_get(2).map_err(decode)?;
        let last_position: Option<i64> = row.try_get(3).map_err(decode)?;
        let recorded_at: Option<DateTime<Utc>> = row.try_get(4).map_err(decode)?;
        match (last_version, last_position, recorded_at) {
            (Some(last_version), Some(last_position), Some(recorded_at))
                if usize::try_from(inserted).ok() == Some(count) =>
            {
                Ok(AppendReceipt {
                    first_version: expected_version + 1,
                    last_version: to_u64(last_version, "version")?,
                    recorded_at,
                    last_position: to_u64(last_position, "position")?,
                })
            }
            _ => Err(StoreError::Backend {
                message: format!(
                    "append to {stream} inserted {inserted} of {count} events; the statement \
                     should write all or none"
                ),
                source: None,
            }),
        }
    }

    /// The conflict to report after a lost race, reading the version that won.
    async fn conflict(&self, stream: &StreamId, expected: u64) -> StoreError {
        match self.stream_version(stream).await {
            Ok(actual) => StoreError::VersionConflict {
                stream: stream.clone(),
                expected,
                actual,
            },
            Err(err) => err,
        }
    }

    /// What a stored event with one of the appended ids means: the same command on the same
    /// stream (already applied) or an id used elsewhere (bad input).
    fn clash(&self, stream: &StreamId, events: &[NewEvent], row: &PgRow) -> StoreError {
        let read = || -> Result<(Uuid, String, String, Option<Uuid>), sqlx::Error> {
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ))
        };
        let (id, aggregate_type, aggregate_id, stored_command) = match read() {
            Ok(fields) => fields,
            Err(e) => return map_sqlx("reading a duplicate event id", e),
        };
        let appended_command = events
            .iter()
            .find(|e| e.event_id == id)
            .and_then(|e| e.command_id);
        match (appended_command, stored_command) {
            (Some(command_id), Some(stored))
                if command_id == stored
                    && aggregate_type == stream.aggregate_type()
                    && aggregate_id == stream.aggregate_id() =>
            {
                StoreError::CommandAlreadyApplied {
                    stream: stream.clone(),
                    command_id,
                }
            }
            _ => InvalidInput::DuplicateEventId(id).into(),
        }
    }

    /// The error for a unique violation on an append: a lost race on the version, or an event id
    /// that is already stored.
    async fn unique_violation(
        &self,
        stream: &StreamId,
        expected: u64,
        ids: &[Uuid],
        events: &[NewEvent],
        err: sqlx::Error,
    ) -> StoreError {
        if constraint(&err) == Some("events_event_id_key") {
            return match sqlx::query(FIND_EVENT_IDS)
                .bind(ids)
                .fetch_optional(&self.pool)
                .await
            {
                Ok(Some(row)) => self.clash(stream, events, &row),
                // The clashing event vanished (it was being written by a transaction that then
                // rolled back); report the original error.
                Ok(None) => map_sqlx("appending", err),
                Err(e) => map_sqlx("finding a duplicate event id", e),
            };
        }
        self.conflict(stream, expected).await
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt> {
        self.append_checked(stream, expected_version, events, None)
            .await
    }

    async fn append_fenced(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        fence: &Fence,
    ) -> StoreResult<AppendReceipt> {
        self.append_checked(stream, expected_version, events, Some(fence))
            .await
    }

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
        let rows = sqlx::query(READ_STREAM)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(after)
            .bind(up_to)
            .bind(query.up_to_time)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("reading a stream", e))?;
        rows.iter()
            .map(|row| decode_event(row, stream.clone()))
            .collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        let row = sqlx::query(STREAM_VERSION)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("reading a stream version", e))?;
        match row {
            Some(row) => to_u64(
                row.try_get(0)
                    .map_err(|e| map_sqlx("reading a stream version", e))?,
                "version",
            ),
            None => Ok(0),
        }
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        let Ok(after) = i64::try_from(after_position) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(READ_ALL)
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("reading all streams", e))?;
        let mut events = Vec::with_capacity(rows.len());
        let mut last_stream: Option<StreamId> = None;
        for row in &rows {
            let decode = |e| map_sqlx("reading all streams", e);
            let aggregate_type: &str = row.try_get(10).map_err(decode)?;
            let aggregate_id: &str = row.try_get(11).map_err(decode)?;
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

    fn crash_safety(&self) -> CrashSafety {
        match &self.durability {
            Some(durability) if durability.survives_server_crash() => CrashSafety::Durable,
            Some(durability) => CrashSafety::NotDurable(durability.to_string()),
            None => CrashSafety::Unknown,
        }
    }

    async fn read_command(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> StoreResult<Vec<RecordedEvent>> {
        let rows = sqlx::query(READ_COMMAND)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(command_id)
            .bind(command_event_id(stream, command_id, 0))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("reading a command's events", e))?;
        rows.iter()
            .map(|row| decode_event(row, stream.clone()))
            .collect()
    }
}

/// Decodes the first ten columns of [`READ_STREAM`] / [`READ_ALL`].
fn decode_event(row: &PgRow, stream: StreamId) -> StoreResult<RecordedEvent> {
    let decode = |e| map_sqlx("decoding an event", e);
    let version: i64 = row.try_get(0).map_err(decode)?;
    let schema_version: i32 = row.try_get(3).map_err(decode)?;
    let payload: Vec<u8> = row.try_get(4).map_err(decode)?;
    let position: i64 = row.try_get(8).map_err(decode)?;
    Ok(RecordedEvent {
        event_id: row.try_get(1).map_err(decode)?,
        command_id: row.try_get(9).map_err(decode)?,
        stream,
        version: to_u64(version, "version")?,
        event_type: row.try_get(2).map_err(decode)?,
        schema_version: schema_version as u32,
        payload: Bytes::from(payload),
        metadata: EventMetadata {
            correlation_id: row.try_get(5).map_err(decode)?,
            causation_id: row.try_get(6).map_err(decode)?,
        },
        recorded_at: row.try_get(7).map_err(decode)?,
        position: to_u64(position, "position")?,
    })
}

/// A stored BIGINT that must not be negative.
pub(crate) fn to_u64(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}
