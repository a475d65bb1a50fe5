//! Reads of the `reminders` table: a stream's reminders, and the due ones for a scheduler.
//!
//! The scheduler's query comes in two statements, so neither needs a plan for both cases:
//! every shard at once is one ordered range scan of `reminders_due_idx` stopping at the limit;
//! a node's shards are a `LATERAL` join over the shards, each an ordered range scan of
//! `reminders_shard_due_idx` stopping at the limit, then the earliest of those. The second
//! reads at most `limit` entries per shard asked for, however many reminders of other shards
//! are due (a filter on `reminders_due_idx` would walk past all of those).
//!
//! The reminders the query skips ([`DueReminders::skip`]) are a filter on the index scans
//! (`reminder_id <> ALL(…)`, true for an empty list), so they never take a place within the
//! limit: the scan walks past them to the next due entries, as the in-memory store does.

use bytes::Bytes;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::reminder::{DueReminders, ReminderState, StoredReminder};
use crate::stream::StreamId;

use super::append::Appender;
use super::error::map_sqlx;
use super::rows::to_u64;

const REMINDERS_OF: &str = r#"
SELECT aggregate_type, aggregate_id, name, reminder_id, shard, due_at, period_ms, payload, state,
       last_error, last_fired_at
FROM reminders
WHERE aggregate_type = $1::text AND aggregate_id = $2::text
ORDER BY name
"#;

/// Every shard: one ordered scan of `reminders_due_idx`.
const DUE: &str = r#"
SELECT aggregate_type, aggregate_id, name, reminder_id, shard, due_at, period_ms, payload, state,
       last_error, last_fired_at
FROM reminders
WHERE state = 'scheduled' AND due_at <= $1::timestamptz AND reminder_id <> ALL($3::uuid[])
ORDER BY due_at
LIMIT $2::bigint
"#;

/// Some shards: at most `limit` per shard from `reminders_shard_due_idx`, then the earliest.
const DUE_IN_SHARDS: &str = r#"
SELECT r.* FROM UNNEST($1::int[]) AS s(shard)
CROSS JOIN LATERAL (
    SELECT aggregate_type, aggregate_id, name, reminder_id, shard, due_at, period_ms, payload,
           state, last_error, last_fired_at
    FROM reminders
    WHERE shard = s.shard AND state = 'scheduled' AND due_at <= $2::timestamptz
      AND reminder_id <> ALL($4::uuid[])
    ORDER BY due_at
    LIMIT $3::bigint
) AS r
ORDER BY r.due_at
LIMIT $3::bigint
"#;

/// The reminders of `stream`, by name.
pub(super) async fn reminders_of(
    appender: &Appender,
    stream: &StreamId,
) -> StoreResult<Vec<StoredReminder>> {
    let rows = appender
        .read("reading a stream's reminders", async |conn| {
            sqlx::query(REMINDERS_OF)
                .bind(stream.aggregate_type())
                .bind(stream.aggregate_id())
                .fetch_all(conn)
                .await
        })
        .await?;
    rows.iter().map(decode).collect()
}

/// The scheduled reminders `query` asks for, earliest first, without those it skips.
pub(super) async fn due(
    appender: &Appender,
    query: &DueReminders,
) -> StoreResult<Vec<StoredReminder>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    const WHAT: &str = "reading due reminders";
    let rows = match &query.shards {
        None => {
            appender
                .read(WHAT, async |conn| {
                    sqlx::query(DUE)
                        .bind(query.due_by)
                        .bind(limit)
                        .bind(&query.skip)
                        .fetch_all(conn)
                        .await
                })
                .await
        }
        Some(shards) => {
            // Shards beyond INT hold no reminders; each shard once, or its rows come twice.
            let mut shards: Vec<i32> = shards
                .iter()
                .filter_map(|&s| i32::try_from(s).ok())
                .collect();
            shards.sort_unstable();
            shards.dedup();
            if shards.is_empty() {
                return Ok(Vec::new());
            }
            appender
                .read(WHAT, async |conn| {
                    sqlx::query(DUE_IN_SHARDS)
                        .bind(shards)
                        .bind(query.due_by)
                        .bind(limit)
                        .bind(&query.skip)
                        .fetch_all(conn)
                        .await
                })
                .await
        }
    }?;
    rows.iter().map(decode).collect()
}

/// Decodes a row of the reminder columns, in the order the `SELECT`s above list them.
fn decode(row: &PgRow) -> StoreResult<StoredReminder> {
    let decode = |e| map_sqlx("decoding a reminder", e);
    let aggregate_type: &str = row.try_get(0).map_err(decode)?;
    let aggregate_id: &str = row.try_get(1).map_err(decode)?;
    let stream = StreamId::new(aggregate_type, aggregate_id)
        .map_err(|e| StoreError::Corrupt(format!("stored reminder's stream id is invalid: {e}")))?;
    let name: String = row.try_get(2).map_err(decode)?;
    let shard: i32 = row.try_get(4).map_err(decode)?;
    let period_ms: Option<i64> = row.try_get(6).map_err(decode)?;
    let payload: Vec<u8> = row.try_get(7).map_err(decode)?;
    let state = match row.try_get::<&str, _>(8).map_err(decode)? {
        "scheduled" => ReminderState::Scheduled,
        "rejected" => ReminderState::Rejected,
        other => {
            return Err(StoreError::Corrupt(format!(
                "reminder {name:?} of {stream} has unknown state {other:?}"
            )));
        }
    };
    Ok(StoredReminder {
        reminder_id: row.try_get::<Uuid, _>(3).map_err(decode)?,
        shard: u32::try_from(shard)
            .map_err(|_| StoreError::Corrupt(format!("negative shard {shard}")))?,
        due_at: row.try_get(5).map_err(decode)?,
        period_ms: period_ms
            .map(|p| to_u64(p, "reminder period"))
            .transpose()?,
        payload: Bytes::from(payload),
        state,
        last_error: row.try_get(9).map_err(decode)?,
        last_fired_at: row.try_get(10).map_err(decode)?,
        stream,
        name,
    })
}
