//! Activation's first read in one statement: the newest snapshot of a stream and the events
//! from its version on, when the snapshots share the events' database.
//!
//! Separately this is two round trips (the snapshot, then the events from the snapshot's own
//! event, whose id verifies it); here a `UNION ALL` returns both: one row for the snapshot, if
//! any, with the snapshot columns set, then the event rows with the event columns set.
//! Concurrent activations (a cold start, a node taking over shards) share statements through a
//! [`Batcher`]: [`READ_START_MANY`] reads many streams' starts at once.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use crate::error::{StoreError, StoreResult};
use crate::event_store::StreamStart;
use crate::stream::StreamId;

use super::append::Appender;
use super::batcher::{Batcher, Job, Limits, SharedError, Statement};
use super::connection::{Held, connection, read_answer};
use super::error::map_sqlx;
use super::rows::{SNAPSHOT_COLUMNS, decode_event_at, decode_record_at};

/// Column 0 says which kind of row it is; columns 1–12 are a snapshot's, 13–23 an event's.
/// What an activation read does, for its errors.
const READING: &str = "reading a snapshot and the events after it";

const READ_START: &str = r#"
WITH snap AS (
    SELECT version, last_event_id, state_schema_version, codec, compression, checksum,
           uncompressed_size, stored_size, taken_at, bytes, base_version, base_checksum
    FROM snapshots
    WHERE aggregate_type = $1::text AND aggregate_id = $2::text
    ORDER BY version DESC
    LIMIT 1
)
SELECT TRUE, s.version, s.last_event_id, s.state_schema_version, s.codec, s.compression,
       s.checksum, s.uncompressed_size, s.stored_size, s.taken_at, s.bytes, s.base_version,
       s.base_checksum,
       NULL::bigint, NULL::uuid, NULL::text, NULL::int4, NULL::bytea, NULL::uuid, NULL::uuid,
       NULL::timestamptz, NULL::bigint, NULL::uuid, NULL::bytea
FROM snap s
UNION ALL
(SELECT FALSE, NULL::bigint, NULL::uuid, NULL::int4, NULL::text, NULL::text, NULL::bigint,
        NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::bytea, NULL::bigint, NULL::bigint,
        e.version, e.event_id, e.event_type, e.schema_version, e.payload, e.correlation_id,
        e.causation_id, e.recorded_at, e.position, e.command_id, e.trace_parent
 FROM events e
 WHERE e.aggregate_type = $1::text AND e.aggregate_id = $2::text
   AND e.version >= COALESCE((SELECT version FROM snap), 1)
 ORDER BY e.version
 LIMIT $3::bigint)
"#;

/// [`READ_START`] for many streams: `k` numbers the requests, and each row carries the `k` of
/// its stream in column 0; columns 2–13 are a snapshot's, 14–24 an event's.
const READ_START_MANY: &str = r#"
WITH req AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])
        WITH ORDINALITY AS r(aggregate_type, aggregate_id, page, k)
), snap AS (
    SELECT r.k, s.*
    FROM req r
    CROSS JOIN LATERAL (
        SELECT version, last_event_id, state_schema_version, codec, compression, checksum,
               uncompressed_size, stored_size, taken_at, bytes, base_version, base_checksum
        FROM snapshots
        WHERE aggregate_type = r.aggregate_type AND aggregate_id = r.aggregate_id
        ORDER BY version DESC
        LIMIT 1
    ) s
)
SELECT s.k, TRUE, s.version, s.last_event_id, s.state_schema_version, s.codec, s.compression,
       s.checksum, s.uncompressed_size, s.stored_size, s.taken_at, s.bytes, s.base_version,
       s.base_checksum,
       NULL::bigint, NULL::uuid, NULL::text, NULL::int4, NULL::bytea, NULL::uuid, NULL::uuid,
       NULL::timestamptz, NULL::bigint, NULL::uuid, NULL::bytea
FROM snap s
UNION ALL
SELECT r.k, FALSE, NULL::bigint, NULL::uuid, NULL::int4, NULL::text, NULL::text, NULL::bigint,
       NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::bytea, NULL::bigint, NULL::bigint,
       e.version, e.event_id, e.event_type, e.schema_version, e.payload, e.correlation_id,
       e.causation_id, e.recorded_at, e.position, e.command_id, e.trace_parent
FROM req r
CROSS JOIN LATERAL (
    SELECT version, event_id, event_type, schema_version, payload, correlation_id,
           causation_id, recorded_at, position, command_id, trace_parent
    FROM events
    WHERE aggregate_type = r.aggregate_type AND aggregate_id = r.aggregate_id
      AND version >= COALESCE((SELECT version FROM snap WHERE snap.k = r.k), 1)
    ORDER BY version
    LIMIT r.page
) e
"#;

/// One activation's read: a stream and how many events to read at most.
pub(super) struct StartRead {
    pub stream: StreamId,
    pub page_size: usize,
}

impl Job for StartRead {
    fn stream(&self) -> &StreamId {
        &self.stream
    }

    fn weight(&self) -> usize {
        self.page_size
    }
}

/// Sends activation reads, alone or many at once.
pub(super) struct StartStatement {
    pub pool: PgPool,
    /// How long a read waits for its answer (the store's client timeout): an activation must
    /// not wait for ever on a server that answers nothing.
    pub client_timeout: Duration,
}

/// The queue of one store's activation reads.
pub(super) type StartBatcher = Batcher<StartStatement>;

impl StartStatement {
    /// The batcher of a store's activation reads on `pool`: batches of up to 128 reads and
    /// 65 536 events in total, two in flight, lingering like group commit.
    pub fn batcher(appender: &Appender, linger: Duration) -> StartBatcher {
        let limits = Limits {
            max_jobs: 128,
            max_weight: 1 << 16,
            max_in_flight: 2,
            linger,
        };
        let statement = Self {
            pool: appender.pool.clone(),
            client_timeout: appender.client_timeout,
        };
        Batcher::new(statement, appender.pool.clone(), limits)
    }
}

#[async_trait]
impl Statement for StartStatement {
    type Job = StartRead;
    type Output = StreamStart;

    async fn send(&self, held: &mut Held, reads: &[StartRead]) -> Vec<StoreResult<StreamStart>> {
        let outcome = match reads {
            [one] => read_start(held, self, &one.stream, one.page_size)
                .await
                .map(|start| vec![Ok(start)]),
            _ => read_starts(held, self, reads).await,
        };
        outcome.unwrap_or_else(|error| SharedError::new(error).spread(reads.len()))
    }
}

/// The newest snapshot of `stream` and up to `page_size` events from its version on.
async fn read_start(
    held: &mut Held,
    statement: &StartStatement,
    stream: &StreamId,
    page_size: usize,
) -> StoreResult<StreamStart> {
    let conn = connection(held, &statement.pool).await?;
    let rows = sqlx::query(READ_START)
        .bind(stream.aggregate_type())
        .bind(stream.aggregate_id())
        .bind(i64::try_from(page_size).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn);
    let rows = tokio::time::timeout(statement.client_timeout, rows).await;
    let rows = read_answer(held, rows, READING, statement.client_timeout)?;
    let mut start = StreamStart {
        snapshot: None,
        events: Vec::with_capacity(rows.len()),
    };
    for row in &rows {
        add_row(&mut start, row, stream, 0)?;
    }
    // UNION ALL keeps each branch's order in practice, but SQL does not promise it.
    start.events.sort_by_key(|e| e.version);
    Ok(start)
}

/// The starts of many streams in one statement, in the order of `reads`.
async fn read_starts(
    held: &mut Held,
    statement: &StartStatement,
    reads: &[StartRead],
) -> StoreResult<Vec<StoreResult<StreamStart>>> {
    let types: Vec<&str> = reads.iter().map(|r| r.stream.aggregate_type()).collect();
    let ids: Vec<&str> = reads.iter().map(|r| r.stream.aggregate_id()).collect();
    let pages: Vec<i64> = reads
        .iter()
        .map(|r| i64::try_from(r.page_size).unwrap_or(i64::MAX))
        .collect();
    let conn = connection(held, &statement.pool).await?;
    let rows = sqlx::query(READ_START_MANY)
        .bind(&types)
        .bind(&ids)
        .bind(&pages)
        .fetch_all(&mut *conn);
    let rows = tokio::time::timeout(statement.client_timeout, rows).await;
    let rows = read_answer(held, rows, READING, statement.client_timeout)?;
    let mut starts: Vec<StreamStart> = reads
        .iter()
        .map(|_| StreamStart {
            snapshot: None,
            events: Vec::new(),
        })
        .collect();
    for row in &rows {
        let k: i64 = row
            .try_get(0)
            .map_err(|e| map_sqlx("decoding an activation read", e))?;
        let Some((start, read)) = usize::try_from(k - 1)
            .ok()
            .and_then(|i| starts.get_mut(i).zip(reads.get(i)))
        else {
            return Err(StoreError::Backend {
                message: format!("an activation read returned a row for request {k}"),
                source: None,
            });
        };
        add_row(start, row, &read.stream, 1)?;
    }
    Ok(starts
        .into_iter()
        .map(|mut start| {
            start.events.sort_by_key(|e| e.version);
            Ok(start)
        })
        .collect())
}

/// Adds a row of [`READ_START`] (or, from column `first` on, of [`READ_START_MANY`]).
fn add_row(
    start: &mut StreamStart,
    row: &PgRow,
    stream: &StreamId,
    first: usize,
) -> StoreResult<()> {
    let is_snapshot: bool = row
        .try_get(first)
        .map_err(|e| map_sqlx("decoding an activation read", e))?;
    if is_snapshot {
        start.snapshot = Some(decode_record_at(row, stream.clone(), first + 1)?);
    } else {
        start.events.push(decode_event_at(
            row,
            stream.clone(),
            first + 1 + SNAPSHOT_COLUMNS,
        )?);
    }
    Ok(())
}
