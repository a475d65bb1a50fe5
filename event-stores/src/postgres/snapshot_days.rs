//! Per-day snapshot statistics in the `snapshot_days` table: an addition is one upsert of
//! every day it names (sums, so concurrent writers on many nodes add up); a read is one range
//! scan of the primary key.

use std::time::Duration;

use chrono::NaiveDate;
use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::error::StoreResult;
use crate::snapshot_days::{SnapshotDay, prepare_addition};

use super::error::map_sqlx;
use super::rows::to_u64;

// The sums cannot overflow silently: a bigint past its range is an error of the statement.
const ADD: &str = r#"
INSERT INTO snapshot_days AS s
    (aggregate_type, day, created, deleted, archived, bytes, creation_micros)
SELECT $1::text, a.day, a.created, a.deleted, a.archived, a.bytes, a.creation_micros
FROM UNNEST($2::date[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
    AS a(day, created, deleted, archived, bytes, creation_micros)
ON CONFLICT (aggregate_type, day) DO UPDATE SET
    created = s.created + EXCLUDED.created,
    deleted = s.deleted + EXCLUDED.deleted,
    archived = s.archived + EXCLUDED.archived,
    bytes = s.bytes + EXCLUDED.bytes,
    creation_micros = s.creation_micros + EXCLUDED.creation_micros
"#;

const READ: &str = r#"
SELECT day, created, deleted, archived, bytes, creation_micros
FROM snapshot_days
WHERE aggregate_type = $1::text AND day >= $2::date
ORDER BY day
"#;

/// Adds `days` to `aggregate_type`'s rows (checked first: nothing is written on bad input).
pub(super) async fn add(
    pool: &PgPool,
    aggregate_type: &str,
    days: &[SnapshotDay],
) -> StoreResult<()> {
    let additions = prepare_addition(aggregate_type, days)?;
    if additions.is_empty() {
        return Ok(());
    }
    // prepare_addition refused every figure above i64::MAX, so these conversions are exact.
    let figure = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let column = |get: fn(&SnapshotDay) -> u64| -> Vec<i64> {
        additions.iter().map(|d| figure(get(d))).collect()
    };
    let day_list: Vec<NaiveDate> = additions.iter().map(|d| d.day).collect();
    sqlx::query(ADD)
        .bind(aggregate_type)
        .bind(day_list)
        .bind(column(|d| d.created))
        .bind(column(|d| d.deleted))
        .bind(column(|d| d.archived))
        .bind(column(|d| d.bytes))
        .bind(column(SnapshotDay::creation_micros))
        .execute(pool)
        .await
        .map_err(|e| map_sqlx("adding snapshot statistics", e))?;
    Ok(())
}

/// `aggregate_type`'s days from `since` on, oldest first.
pub(super) async fn read(
    pool: &PgPool,
    aggregate_type: &str,
    since: NaiveDate,
) -> StoreResult<Vec<SnapshotDay>> {
    let rows = sqlx::query(READ)
        .bind(aggregate_type)
        .bind(since)
        .fetch_all(pool)
        .await
        .map_err(|e| map_sqlx("reading snapshot statistics", e))?;
    let decode = |e| map_sqlx("reading snapshot statistics", e);
    rows.iter()
        .map(|row| {
            let figure = |index: usize, what: &str| -> StoreResult<u64> {
                to_u64(row.try_get::<i64, _>(index).map_err(decode)?, what)
            };
            Ok(SnapshotDay {
                day: row.try_get(0).map_err(decode)?,
                created: figure(1, "created")?,
                deleted: figure(2, "deleted")?,
                archived: figure(3, "archived")?,
                bytes: figure(4, "bytes")?,
                creation_time: Duration::from_micros(figure(5, "creation time")?),
            })
        })
        .collect()
}
