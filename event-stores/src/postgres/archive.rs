//! [`PgSnapshotArchive`]: archived snapshots in the `snapshot_archive` table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::error::map_sqlx;
use super::rows::{SNAPSHOT_COLUMNS, decode_record, decode_record_at};
use crate::archive::{ArchivedSnapshot, SnapshotArchive};
use crate::{SnapshotRecord, StoreError, StoreResult, StreamId};

const ARCHIVE: &str = r#"
INSERT INTO snapshot_archive
    (aggregate_type, aggregate_id, version, last_event_id, state_schema_version, codec,
     compression, checksum, uncompressed_size, stored_size, taken_at, bytes, base_version,
     base_checksum, archived_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now())
ON CONFLICT (aggregate_type, aggregate_id, version) DO UPDATE SET
    last_event_id = $4, state_schema_version = $5, codec = $6, compression = $7, checksum = $8,
    uncompressed_size = $9, stored_size = $10, taken_at = $11, bytes = $12, base_version = $13,
    base_checksum = $14, archived_at = now()
"#;

const LIST: &str = r#"
SELECT version, last_event_id, state_schema_version, codec, compression, checksum,
       uncompressed_size, stored_size, taken_at, bytes, base_version, base_checksum, archived_at
FROM snapshot_archive
WHERE aggregate_type = $1 AND aggregate_id = $2 AND version >= $3 AND version <= $4
ORDER BY version DESC
"#;

const LOAD: &str = r#"
SELECT version, last_event_id, state_schema_version, codec, compression, checksum,
       uncompressed_size, stored_size, taken_at, bytes, base_version, base_checksum
FROM snapshot_archive
WHERE aggregate_type = $1 AND aggregate_id = $2 AND version <= $3
ORDER BY version DESC
LIMIT 1
"#;

const DELETE: &str =
    "DELETE FROM snapshot_archive WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3";

/// Archived snapshots in PostgreSQL, usually on the snapshot store's pool; the table comes
/// with the event store's migrations.
#[derive(Debug, Clone)]
pub struct PgSnapshotArchive {
    pool: PgPool,
}

impl PgSnapshotArchive {
    /// An archive on `pool`, whose database has been migrated ([`migrate`](super::migrate)).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn signed(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Backend {
        message: format!("{what} {value} does not fit PostgreSQL's bigint"),
        source: None,
    })
}

#[async_trait]
impl SnapshotArchive for PgSnapshotArchive {
    async fn archive(&self, record: SnapshotRecord) -> StoreResult<()> {
        sqlx::query(ARCHIVE)
            .bind(record.stream.aggregate_type())
            .bind(record.stream.aggregate_id())
            .bind(signed(record.version, "version")?)
            .bind(record.last_event_id)
            .bind(record.state_schema_version as i32)
            .bind(&record.codec)
            .bind(&record.compression)
            // Bit-cast, as the snapshots table keeps it.
            .bind(record.checksum as i64)
            .bind(signed(record.uncompressed_size, "uncompressed size")?)
            .bind(signed(record.stored_size, "stored size")?)
            .bind(record.taken_at)
            .bind(record.bytes.as_ref())
            .bind(record.base.map(|b| b.version as i64))
            .bind(record.base.map(|b| b.checksum as i64))
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("archiving a snapshot", e))?;
        Ok(())
    }

    async fn list_archived(
        &self,
        stream: &StreamId,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<ArchivedSnapshot>> {
        let rows = sqlx::query(LIST)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(i64::try_from(from).unwrap_or(i64::MAX))
            .bind(i64::try_from(to).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("listing archived snapshots", e))?;
        rows.iter()
            .map(|row| {
                let archived_at: DateTime<Utc> = row
                    .try_get(SNAPSHOT_COLUMNS)
                    .map_err(|e| map_sqlx("decoding an archived snapshot", e))?;
                Ok(ArchivedSnapshot {
                    record: decode_record_at(row, stream.clone(), 0)?,
                    archived_at,
                })
            })
            .collect()
    }

    async fn load_archived(
        &self,
        stream: &StreamId,
        at_or_before: u64,
    ) -> StoreResult<Option<SnapshotRecord>> {
        let row = sqlx::query(LOAD)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(i64::try_from(at_or_before).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_sqlx("loading an archived snapshot", e))?;
        row.map(|row| decode_record(&row, stream.clone()))
            .transpose()
    }

    async fn delete_archived(&self, stream: &StreamId, version: u64) -> StoreResult<bool> {
        let deleted = sqlx::query(DELETE)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("deleting an archived snapshot", e))?;
        Ok(deleted.rows_affected() > 0)
    }
}
