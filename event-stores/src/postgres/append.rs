//! One append to PostgreSQL: its statement, how its outcome is read, and what a refused append
//! means. [`group_commit`](super::group_commit) sends many of these in one statement and falls
//! back to this path one by one when a batch as a whole is refused.
//!
//! An append is one statement, so one round trip once the statement is prepared on the
//! connection: a CTE reads the stream's head (its last version and `recorded_at`, a backward scan
//! of the primary key), and `INSERT … SELECT … FROM UNNEST(…) WITH ORDINALITY … WHERE head = $expected`
//! writes every event or none. The statement returns the head it saw, so a refused append
//! reports the actual version without a second query. Two appenders that both saw the same head
//! race on the primary key `(aggregate_type, aggregate_id, version)`: the loser waits for the
//! winner's commit, gets a unique violation and reports a version conflict.
//!
//! One event without a fence, the common command, skips the CTE: a plain `INSERT … SELECT` from
//! the event at the expected version (none for a new stream), with the primary key refusing the
//! next version if it exists. Only a refused one reads the head, for its conflict.
//!
//! `recorded_at` is `GREATEST(now(), the stream's last recorded_at)`, so it never decreases
//! within a stream even if the server clock steps back, and `up_to_time` reads are a prefix.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::event::NewEvent;
use crate::event_store::AppendReceipt;
use crate::fence::Fence;
use crate::invalid_input::InvalidInput;
use crate::stream::StreamId;

use super::connection::{Held, connection, discard, discard_if_ended, read_answer, read_within};
use super::error::{UNIQUE_VIOLATION, constraint, is_lost_in_flight, map_sqlx, sqlstate};
use super::rows::to_u64;

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
                        position, command_id, trace_parent)
    SELECT $1::text, $2::text, head.version + e.n, e.event_id, e.event_type,
           e.schema_version, e.payload, e.correlation_id, e.causation_id, head.recorded_at,
           (head.tx << 16) + e.n - 1, e.command_id, e.trace_parent
    FROM head,
         UNNEST($4::uuid[], $5::text[], $6::int4[], $7::bytea[], $8::uuid[], $9::uuid[],
                $10::uuid[], $11::bytea[])
             WITH ORDINALITY AS e(event_id, event_type, schema_version, payload,
                                  correlation_id, causation_id, command_id, trace_parent, n)
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
    WHERE shard = $12::int AND owner = $13::uuid AND epoch = $14::bigint
    FOR SHARE
), "#,
    "AND EXISTS (SELECT 1 FROM fence)",
    "EXISTS (SELECT 1 FROM fence)"
);

/// The fenced one-event statement: scalar parameters instead of arrays, no UNNEST, no aggregate
/// (benches/PROFILE.md, section 4). Returns the head it saw, the inserted event's position and
/// time (NULL when refused), and whether the fence held.
macro_rules! append_one_sql {
    ($fence_cte:literal, $fence_condition:literal, $fence_ok:literal) => {
        concat!(
            "WITH ",
            $fence_cte,
            r#"last AS (
    SELECT version, recorded_at FROM events
    WHERE aggregate_type = $1::text AND aggregate_id = $2::text
    ORDER BY version DESC
    LIMIT 1
), ins AS (
    INSERT INTO events (aggregate_type, aggregate_id, version, event_id, event_type,
                        schema_version, payload, correlation_id, causation_id, recorded_at,
                        position, command_id, trace_parent)
    SELECT $1::text, $2::text, $3::bigint + 1, $4::uuid, $5::text, $6::int4, $7::bytea,
           $8::uuid, $9::uuid, GREATEST(now(), (SELECT recorded_at FROM last)),
           pg_current_xact_id()::text::bigint << 16, $10::uuid, $11::bytea
    WHERE COALESCE((SELECT version FROM last), 0) = $3::bigint "#,
            $fence_condition,
            r#"
    RETURNING position, recorded_at
)
SELECT COALESCE((SELECT version FROM last), 0), (SELECT position FROM ins),
       (SELECT recorded_at FROM ins), "#,
            $fence_ok,
            "\n"
        )
    };
}

/// The one-event statement without a fence: a plain `INSERT … SELECT`, no CTE (benches/PROFILE.md,
/// section 4: about 20 µs less per append than the CTE form, as fast as a bare INSERT under
/// pgbench). The expected version is checked by two facts instead of a head read: the event at
/// the expected version exists (or none is expected), and the primary key refuses the next
/// version if it exists. No row back, or a unique violation, means a conflict (or a duplicate
/// event id); the head is read then, off the common path.
const APPEND_ONE: &str = r#"
INSERT INTO events (aggregate_type, aggregate_id, version, event_id, event_type,
                    schema_version, payload, correlation_id, causation_id, recorded_at,
                    position, command_id, trace_parent)
SELECT $1::text, $2::text, $3::bigint + 1, $4::uuid, $5::text, $6::int4, $7::bytea,
       $8::uuid, $9::uuid, GREATEST(now(), head.recorded_at),
       pg_current_xact_id()::text::bigint << 16, $10::uuid, $11::bytea
FROM (SELECT NULL::timestamptz AS recorded_at WHERE $3::bigint = 0
      UNION ALL
      SELECT recorded_at FROM events
      WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND version = $3::bigint) AS head
RETURNING position, recorded_at
"#;

const APPEND_ONE_FENCED: &str = append_one_sql!(
    r#"fence AS (
    SELECT epoch FROM shard_owners
    WHERE shard = $12::int AND owner = $13::uuid AND epoch = $14::bigint
    FOR SHARE
), "#,
    "AND EXISTS (SELECT 1 FROM fence)",
    "EXISTS (SELECT 1 FROM fence)"
);

const STREAM_VERSION: &str = r#"
SELECT version FROM events
WHERE aggregate_type = $1::text AND aggregate_id = $2::text
ORDER BY version DESC
LIMIT 1
"#;

const FIND_EVENT_IDS: &str = r#"
SELECT event_id, aggregate_type, aggregate_id, command_id FROM events
WHERE event_id = ANY($1::uuid[])
LIMIT 1
"#;

/// One append, checked and ready to send: the stream, the version it expects (at most
/// `i64::MAX`), its events and, for a cluster's owner, its fence.
#[derive(Debug)]
pub(super) struct Append {
    pub stream: StreamId,
    pub expected: i64,
    pub events: Vec<NewEvent>,
    pub fence: Option<Fence>,
}

impl Append {
    /// The receipt for this append, from what the statement returned for it.
    fn receipt(
        &self,
        inserted: i64,
        last_version: Option<i64>,
        last_position: Option<i64>,
        recorded_at: Option<DateTime<Utc>>,
    ) -> StoreResult<AppendReceipt> {
        let count = self.events.len();
        match (last_version, last_position, recorded_at) {
            (Some(last_version), Some(last_position), Some(recorded_at))
                if usize::try_from(inserted).ok() == Some(count) =>
            {
                Ok(AppendReceipt {
                    first_version: self.expected.unsigned_abs() + 1,
                    last_version: to_u64(last_version, "version")?,
                    recorded_at,
                    last_position: to_u64(last_position, "position")?,
                })
            }
            _ => Err(StoreError::Backend {
                message: format!(
                    "append to {} inserted {inserted} of {count} events; the statement should \
                     write all or none",
                    self.stream
                ),
                source: None,
            }),
        }
    }

    /// What a statement that saw head `current`, inserted nothing or found the fence gone
    /// means for this append.
    pub fn refusal(&self, current: i64, fence_held: bool) -> StoreResult<StoreError> {
        if let (Some(fence), false) = (self.fence, fence_held) {
            return Ok(StoreError::Fenced {
                stream: self.stream.clone(),
                shard: fence.shard,
                epoch: fence.epoch,
            });
        }
        Ok(StoreError::VersionConflict {
            stream: self.stream.clone(),
            expected: self.expected.unsigned_abs(),
            actual: to_u64(current, "version")?,
        })
    }

    /// The outcome of this append from one result row: `(head seen, inserted, last version,
    /// last position, recorded_at, fence held)`, read from `first` on.
    pub fn outcome(&self, row: &PgRow, first: usize) -> StoreResult<AppendReceipt> {
        let decode = |e| map_sqlx("reading the append result", e);
        let current: i64 = row.try_get(first).map_err(decode)?;
        let inserted: i64 = row.try_get(first + 1).map_err(decode)?;
        let fence_held: bool = row.try_get(first + 5).map_err(decode)?;
        if inserted == 0 || !fence_held {
            return Err(self.refusal(current, fence_held)?);
        }
        self.receipt(
            inserted,
            row.try_get(first + 2).map_err(decode)?,
            row.try_get(first + 3).map_err(decode)?,
            row.try_get(first + 4).map_err(decode)?,
        )
    }
}

impl Append {
    /// The outcome of this append from the row its statement ([`Appender::send`]) returned.
    pub fn outcome_of_row(&self, row: &PgRow) -> StoreResult<AppendReceipt> {
        match (self.events.len() == 1, self.fence.is_some()) {
            (true, false) => self.outcome_of_plain_one(row),
            (true, true) => self.outcome_of_one(row),
            (false, _) => self.outcome(row, 0),
        }
    }

    /// The outcome of a one-event append from [`APPEND_ONE`]'s row: it was stored.
    fn outcome_of_plain_one(&self, row: &PgRow) -> StoreResult<AppendReceipt> {
        let decode = |e| map_sqlx("reading the append result", e);
        self.receipt(
            1,
            Some(self.expected + 1),
            row.try_get(0).map_err(decode)?,
            row.try_get(1).map_err(decode)?,
        )
    }

    /// The outcome of a fenced one-event append from [`APPEND_ONE_FENCED`]'s row.
    fn outcome_of_one(&self, row: &PgRow) -> StoreResult<AppendReceipt> {
        let decode = |e| map_sqlx("reading the append result", e);
        let current: i64 = row.try_get(0).map_err(decode)?;
        let position: Option<i64> = row.try_get(1).map_err(decode)?;
        let fence_held: bool = row.try_get(3).map_err(decode)?;
        if position.is_none() || !fence_held {
            return Err(self.refusal(current, fence_held)?);
        }
        self.receipt(
            1,
            Some(self.expected + 1),
            position,
            row.try_get(2).map_err(decode)?,
        )
    }
}

/// The columns of an append's events, as the statement's array parameters.
pub(super) struct Columns<'a> {
    pub ids: Vec<Uuid>,
    pub types: Vec<&'a str>,
    pub schema_versions: Vec<i32>,
    pub payloads: Vec<&'a [u8]>,
    pub correlations: Vec<Option<Uuid>>,
    pub causations: Vec<Option<Uuid>>,
    pub commands: Vec<Option<Uuid>>,
    pub traces: Vec<Option<Vec<u8>>>,
}

impl<'a> Columns<'a> {
    /// Empty columns with room for `count` events.
    pub fn with_capacity(count: usize) -> Self {
        Self {
            ids: Vec::with_capacity(count),
            types: Vec::with_capacity(count),
            schema_versions: Vec::with_capacity(count),
            payloads: Vec::with_capacity(count),
            correlations: Vec::with_capacity(count),
            causations: Vec::with_capacity(count),
            commands: Vec::with_capacity(count),
            traces: Vec::with_capacity(count),
        }
    }

    /// Adds `events`, in order.
    pub fn extend(&mut self, events: &'a [NewEvent]) {
        for event in events {
            self.ids.push(event.event_id);
            self.types.push(event.event_type.as_str());
            // Bit-cast: INT holds every u32 this way, and reads cast back.
            self.schema_versions.push(event.schema_version as i32);
            self.payloads.push(event.payload.as_ref());
            self.correlations.push(event.metadata.correlation_id);
            self.causations.push(event.metadata.causation_id);
            self.commands.push(event.command_id);
            self.traces
                .push(event.metadata.trace_parent.map(|t| t.to_bytes().to_vec()));
        }
    }
}

/// Sends appends on a pool: one at a time here, many at once in
/// [`group_commit`](super::group_commit).
#[derive(Clone, Debug)]
pub(super) struct Appender {
    pub pool: PgPool,
    pub client_timeout: Duration,
}

impl Appender {
    /// The connection in `held`, or one borrowed from the pool.
    pub async fn connection<'c>(&self, held: &'c mut Held) -> StoreResult<&'c mut PgConnection> {
        connection(held, &self.pool).await
    }

    /// One append statement, fenced or not, on the connection in `held` (acquired if none):
    /// send (bounded by the client timeout), classify the outcome. A connection whose state is
    /// unknown afterwards, or whose session the server ended, is taken out of `held` and closed.
    pub async fn one(&self, held: &mut Held, append: &Append) -> StoreResult<AppendReceipt> {
        let conn = self.connection(held).await?;
        let Ok(result) = self.send(conn, append).await? else {
            // A stalled server or black-holed network: the statement may still commit.
            // The connection is in an unknown state, so it must not serve anyone else.
            discard(held);
            return Err(self.no_answer(&append.stream));
        };
        if let Err(err) = &result {
            discard_if_ended(held, err);
        }
        match result {
            Ok(Some(row)) => append.outcome_of_row(&row),
            Err(err) if is_lost_in_flight(&err) => Err(StoreError::Indeterminate {
                message: format!(
                    "append to {}: connection lost after sending: {err}",
                    append.stream
                ),
                source: Some(Box::new(err)),
            }),
            refused => Err(self.refused(held, append, refused).await),
        }
    }

    /// Sends `append`'s statement (the one-event or many-event form, fenced or not) on `conn`
    /// and waits for its answer within the client timeout (`Err(Elapsed)` when none came).
    /// A row is decided by [`Append::outcome_of_row`]; no row or an error by
    /// [`refused`](Self::refused).
    pub async fn send(
        &self,
        conn: &mut PgConnection,
        append: &Append,
    ) -> StoreResult<Result<Result<Option<PgRow>, sqlx::Error>, tokio::time::error::Elapsed>> {
        let stream = &append.stream;
        let fence = append.fence.as_ref().map(fence_params).transpose()?;
        let single = append.events.len() == 1;
        let query = match (single, fence.is_some()) {
            (true, false) => APPEND_ONE,
            (true, true) => APPEND_ONE_FENCED,
            (false, false) => APPEND,
            (false, true) => APPEND_FENCED,
        };
        let mut columns;
        let query = sqlx::query(query)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(append.expected);
        let query = match &append.events[..] {
            [event] => query
                .bind(event.event_id)
                .bind(event.event_type.as_str())
                // Bit-cast: INT holds every u32 this way, and reads cast back.
                .bind(event.schema_version as i32)
                .bind(event.payload.as_ref())
                .bind(event.metadata.correlation_id)
                .bind(event.metadata.causation_id)
                .bind(event.command_id)
                .bind(event.metadata.trace_parent.map(|t| t.to_bytes())),
            _ => {
                columns = Columns::with_capacity(append.events.len());
                columns.extend(&append.events);
                query
                    .bind(&columns.ids)
                    .bind(&columns.types)
                    .bind(&columns.schema_versions)
                    .bind(&columns.payloads)
                    .bind(&columns.correlations)
                    .bind(&columns.causations)
                    .bind(&columns.commands)
                    .bind(&columns.traces)
            }
        };
        let query = match fence {
            Some((shard, owner, epoch)) => query.bind(shard).bind(owner).bind(epoch),
            None => query,
        }
        .fetch_optional(&mut *conn);
        Ok(tokio::time::timeout(self.client_timeout, query).await)
    }

    /// Why `append` was refused when its statement answered `result` (no row, or an error the
    /// server sent: not a lost connection), reading the stream on the connection in `held` (or
    /// a new one) when the answer alone does not say. Must not run inside the append's own
    /// transaction once it failed: roll that back first.
    pub async fn refused(
        &self,
        held: &mut Held,
        append: &Append,
        result: Result<Option<PgRow>, sqlx::Error>,
    ) -> StoreError {
        let stream = &append.stream;
        let unfenced_one = append.events.len() == 1 && append.fence.is_none();
        match result {
            // No event at the expected version: the stream is behind it.
            Ok(None) if unfenced_one => {
                self.conflict_on(held, stream, append.expected.unsigned_abs())
                    .await
            }
            Ok(Some(row)) => match append.outcome_of_row(&row) {
                Err(refusal) => refusal,
                Ok(_) => StoreError::Backend {
                    message: format!("append to {stream}: a stored append was taken as refused"),
                    source: None,
                },
            },
            Ok(None) => StoreError::Backend {
                message: format!("append to {stream}: the statement returned no row"),
                source: None,
            },
            Err(err) if sqlstate(&err).as_deref() == Some(UNIQUE_VIOLATION) => {
                self.unique_violation(held, append, err).await
            }
            Err(err) => map_sqlx("appending", err),
        }
    }

    /// The outcome of a read after a refused append (`what` it does), awaited within the client
    /// timeout. Nothing was stored, so a silent server is the retryable
    /// [`StoreError::Unavailable`]; a connection that broke or stayed silent is closed.
    fn settle<T>(
        &self,
        held: &mut Held,
        outcome: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
        what: &str,
    ) -> StoreResult<T> {
        read_answer(held, outcome, what, self.client_timeout)
    }

    /// Sends a read on a connection of the pool (`what` it reads), bounded by the client
    /// timeout; see [`read_within`].
    pub async fn read<T>(
        &self,
        what: &str,
        read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> StoreResult<T> {
        read_within(&self.pool, self.client_timeout, what, read).await
    }

    /// The error of an append whose statement got no answer within the client timeout.
    pub fn no_answer(&self, stream: &StreamId) -> StoreError {
        StoreError::Indeterminate {
            message: format!(
                "append to {stream}: no answer from the server within {:?}",
                self.client_timeout
            ),
            source: None,
        }
    }

    /// The stream's current version.
    pub async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        self.stream_version_on(&mut None, stream).await
    }

    /// [`stream_version`](Self::stream_version) on the connection in `held`, bounded by the
    /// client timeout; a connection that breaks or stays silent is closed, not reused.
    async fn stream_version_on(&self, held: &mut Held, stream: &StreamId) -> StoreResult<u64> {
        let conn = self.connection(held).await?;
        let read = sqlx::query(STREAM_VERSION)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .fetch_optional(&mut *conn);
        let read = tokio::time::timeout(self.client_timeout, read).await;
        let row = self.settle(held, read, "reading a stream version")?;
        match row {
            Some(row) => to_u64(
                row.try_get(0)
                    .map_err(|e| map_sqlx("reading a stream version", e))?,
                "version",
            ),
            None => Ok(0),
        }
    }

    /// The conflict to report after a lost race, reading the version that won.
    pub async fn conflict(&self, stream: &StreamId, expected: u64) -> StoreError {
        self.conflict_on(&mut None, stream, expected).await
    }

    /// [`conflict`](Self::conflict) on the connection in `held`.
    async fn conflict_on(&self, held: &mut Held, stream: &StreamId, expected: u64) -> StoreError {
        match self.stream_version_on(held, stream).await {
            Ok(actual) => StoreError::VersionConflict {
                stream: stream.clone(),
                expected,
                actual,
            },
            Err(err) => err,
        }
    }

    /// The error for a unique violation on an append: a lost race on the version, or an event id
    /// that is already stored. The version is checked first (the store's contract), since
    /// [`APPEND_ONE`] leaves it to the primary key, which may or may not be checked before the
    /// event id's index.
    async fn unique_violation(
        &self,
        held: &mut Held,
        append: &Append,
        err: sqlx::Error,
    ) -> StoreError {
        let expected = append.expected.unsigned_abs();
        match self.stream_version_on(held, &append.stream).await {
            Ok(actual) if actual != expected => {
                return StoreError::VersionConflict {
                    stream: append.stream.clone(),
                    expected,
                    actual,
                };
            }
            Ok(_) => {}
            Err(error) => return error,
        }
        if constraint(&err) == Some("events_event_id_key") {
            let ids: Vec<Uuid> = append.events.iter().map(|e| e.event_id).collect();
            let conn = match self.connection(held).await {
                Ok(conn) => conn,
                Err(error) => return error,
            };
            let find = sqlx::query(FIND_EVENT_IDS)
                .bind(&ids)
                .fetch_optional(&mut *conn);
            let find = tokio::time::timeout(self.client_timeout, find).await;
            return match self.settle(held, find, "finding a duplicate event id") {
                Ok(Some(row)) => clash(append, &row),
                // The clashing event vanished (it was being written by a transaction that then
                // rolled back); report the original error.
                Ok(None) => map_sqlx("appending", err),
                Err(error) => error,
            };
        }
        self.conflict_on(held, &append.stream, append.expected.unsigned_abs())
            .await
    }
}

/// A fence as the statement's parameters.
pub(super) fn fence_params(fence: &Fence) -> StoreResult<(i32, Uuid, i64)> {
    let shard = i32::try_from(fence.shard)
        .map_err(|_| InvalidInput::BadVersion(format!("shard {} is out of range", fence.shard)))?;
    let epoch = i64::try_from(fence.epoch)
        .map_err(|_| InvalidInput::BadVersion(format!("epoch {} is out of range", fence.epoch)))?;
    Ok((shard, fence.owner, epoch))
}

/// What a stored event with one of the appended ids means: the same command on the same stream
/// (already applied) or an id used elsewhere (bad input).
fn clash(append: &Append, row: &PgRow) -> StoreError {
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
    let stream = &append.stream;
    let appended_command = append
        .events
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
