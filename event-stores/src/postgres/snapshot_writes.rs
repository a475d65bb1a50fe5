//! Snapshot saves and retention of many aggregates per statement.
//!
//! The snapshot writer persists snapshots off the command path, many streams at once; sent one
//! by one, each save and each retention pass is a round trip and a commit competing with the
//! appends. Through a [`Batcher`] the saves that meet share one `INSERT … SELECT FROM UNNEST`,
//! and the retention passes one `DELETE`, each still per stream: a save replaces only its own
//! `(stream, version)`, and retention keeps each stream's own newest `keep`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::error::{StoreError, StoreResult};
use crate::snapshot::SnapshotRecord;
use crate::stream::StreamId;

use super::batcher::{Batcher, Job, Limits, SharedError, Statement};
use super::connection::{Held, connection, failed};
use super::error::map_sqlx;
use super::rows::decode_record_at;

/// Most bytes of snapshots one save statement carries; a larger snapshot goes alone.
const MAX_SAVE_BYTES: usize = 16 << 20;

/// One save: the record, with its sizes checked to fit the BIGINT columns.
pub(super) struct Save {
    pub record: SnapshotRecord,
    pub version: i64,
    pub uncompressed_size: i64,
    pub stored_size: i64,
    /// The delta's base version, checked to fit the BIGINT column.
    pub base_version: Option<i64>,
}

impl Job for Save {
    fn stream(&self) -> &StreamId {
        &self.record.stream
    }

    fn weight(&self) -> usize {
        self.record.bytes.len()
    }
}

const SAVE_MANY: &str = r#"
INSERT INTO snapshots (aggregate_type, aggregate_id, version, last_event_id,
                       state_schema_version, codec, compression, checksum,
                       uncompressed_size, stored_size, taken_at, bytes, base_version,
                       base_checksum)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::uuid[], $5::int4[], $6::text[],
                     $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::timestamptz[],
                     $12::bytea[], $13::int8[], $14::int8[])
ON CONFLICT (aggregate_type, aggregate_id, version) DO UPDATE SET
    last_event_id = EXCLUDED.last_event_id,
    state_schema_version = EXCLUDED.state_schema_version,
    codec = EXCLUDED.codec,
    compression = EXCLUDED.compression,
    checksum = EXCLUDED.checksum,
    uncompressed_size = EXCLUDED.uncompressed_size,
    stored_size = EXCLUDED.stored_size,
    taken_at = EXCLUDED.taken_at,
    bytes = EXCLUDED.bytes,
    base_version = EXCLUDED.base_version,
    base_checksum = EXCLUDED.base_checksum
RETURNING aggregate_type, aggregate_id, version, last_event_id, state_schema_version, codec,
          compression, checksum, uncompressed_size, stored_size, taken_at, bytes, base_version,
          base_checksum
"#;

/// Saves, alone or many at once (one save is [`SAVE_MANY`] with arrays of one); each answered
/// with the row as stored, so the writer verifies it without reading it back.
pub(super) struct SaveStatement {
    pool: PgPool,
}

impl SaveStatement {
    /// Saves on `pool`.
    pub fn new(pool: &PgPool) -> Self {
        Self { pool: pool.clone() }
    }
}

/// One retention pass: keep the newest `keep` snapshots of the stream at or below `at`
/// (those above are neither counted nor deleted).
pub(super) struct Retain {
    pub stream: StreamId,
    pub keep: i64,
    pub at: i64,
}

impl Job for Retain {
    fn stream(&self) -> &StreamId {
        &self.stream
    }

    fn weight(&self) -> usize {
        1
    }
}

/// Per stream, the version of its `keep`-th newest snapshot at or below `at` (NULL with fewer:
/// `version < NULL` deletes nothing); every older one goes, except the bases that the kept ones
/// (and those above `at`) name. One row per request, with how many it deleted.
const RETAIN_MANY: &str = r#"
WITH req AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[])
        WITH ORDINALITY AS r(aggregate_type, aggregate_id, keep, at, k)
), cut AS (
    SELECT r.k, r.aggregate_type, r.aggregate_id,
           (SELECT version FROM snapshots s
            WHERE s.aggregate_type = r.aggregate_type AND s.aggregate_id = r.aggregate_id
              AND s.version <= r.at
            ORDER BY version DESC
            OFFSET r.keep - 1
            LIMIT 1) AS below
    FROM req r
), gone AS (
    DELETE FROM snapshots s
    USING cut c
    WHERE s.aggregate_type = c.aggregate_type AND s.aggregate_id = c.aggregate_id
      AND s.version < c.below
      AND NOT EXISTS (
          SELECT 1 FROM snapshots d
          WHERE d.aggregate_type = c.aggregate_type AND d.aggregate_id = c.aggregate_id
            AND d.version >= c.below AND d.base_version = s.version)
    RETURNING c.k
)
SELECT c.k, (SELECT COUNT(*) FROM gone g WHERE g.k = c.k) FROM cut c ORDER BY c.k
"#;

/// Retention passes, alone or many at once.
pub(super) struct RetainStatement {
    pool: PgPool,
}

impl RetainStatement {
    /// Retention passes on `pool`.
    pub fn new(pool: &PgPool) -> Self {
        Self { pool: pool.clone() }
    }
}

/// The batchers of one snapshot store's writes.
pub(super) struct SnapshotWrites {
    pub saves: Arc<Batcher<SaveStatement>>,
    pub retention: Arc<Batcher<RetainStatement>>,
}

impl SnapshotWrites {
    /// Batchers on `pool`: up to 128 streams per statement, one statement of each kind in
    /// flight, lingering like group commit.
    pub fn new(pool: &PgPool, linger: Duration) -> Self {
        let limits = Limits {
            max_jobs: 128,
            max_weight: MAX_SAVE_BYTES,
            max_in_flight: 1,
            linger,
        };
        Self {
            saves: Arc::new(Batcher::new(SaveStatement::new(pool), pool.clone(), limits)),
            retention: Arc::new(Batcher::new(
                RetainStatement::new(pool),
                pool.clone(),
                Limits {
                    max_weight: usize::MAX,
                    ..limits
                },
            )),
        }
    }
}

#[async_trait]
impl Statement for SaveStatement {
    type Job = Save;
    type Output = SnapshotRecord;

    async fn send(&self, held: &mut Held, saves: &[Save]) -> Vec<StoreResult<SnapshotRecord>> {
        let conn = match connection(held, &self.pool).await {
            Ok(conn) => conn,
            Err(error) => return SharedError::new(error).spread(saves.len()),
        };
        let records = saves.iter().map(|s| &s.record);
        let outcome = {
            // Bit-casts: the columns hold every u32 / u64 this way, and reads cast back.
            sqlx::query(SAVE_MANY)
                .bind(
                    records
                        .clone()
                        .map(|r| r.stream.aggregate_type())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    records
                        .clone()
                        .map(|r| r.stream.aggregate_id())
                        .collect::<Vec<_>>(),
                )
                .bind(saves.iter().map(|s| s.version).collect::<Vec<_>>())
                .bind(records.clone().map(|r| r.last_event_id).collect::<Vec<_>>())
                .bind(
                    records
                        .clone()
                        .map(|r| r.state_schema_version as i32)
                        .collect::<Vec<_>>(),
                )
                .bind(
                    records
                        .clone()
                        .map(|r| r.codec.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    records
                        .clone()
                        .map(|r| r.compression.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    records
                        .clone()
                        .map(|r| r.checksum as i64)
                        .collect::<Vec<_>>(),
                )
                .bind(
                    saves
                        .iter()
                        .map(|s| s.uncompressed_size)
                        .collect::<Vec<_>>(),
                )
                .bind(saves.iter().map(|s| s.stored_size).collect::<Vec<_>>())
                .bind(records.clone().map(|r| r.taken_at).collect::<Vec<_>>())
                .bind(
                    records
                        .clone()
                        .map(|r| r.bytes.as_ref())
                        .collect::<Vec<_>>(),
                )
                .bind(saves.iter().map(|s| s.base_version).collect::<Vec<_>>())
                .bind(
                    records
                        .map(|r| r.base.map(|b| b.checksum as i64))
                        .collect::<Vec<_>>(),
                )
                .fetch_all(&mut *conn)
                .await
        };
        let rows = match outcome {
            Ok(rows) => rows,
            Err(err) => {
                return SharedError::new(failed(held, "saving snapshots", err)).spread(saves.len());
            }
        };
        // RETURNING keeps no input order; a batch holds one save per stream.
        saves
            .iter()
            .map(|save| {
                let stream = &save.record.stream;
                let row = rows.iter().find(|row| {
                    row.try_get::<&str, _>(0).ok() == Some(stream.aggregate_type())
                        && row.try_get::<&str, _>(1).ok() == Some(stream.aggregate_id())
                });
                match row {
                    Some(row) => decode_record_at(row, stream.clone(), 2),
                    None => Err(StoreError::Backend {
                        message: format!(
                            "the snapshot of {stream} at {} is not in the store after saving it",
                            save.record.version
                        ),
                        source: None,
                    }),
                }
            })
            .collect()
    }
}

#[async_trait]
impl Statement for RetainStatement {
    type Job = Retain;
    type Output = u64;

    async fn send(&self, held: &mut Held, passes: &[Retain]) -> Vec<StoreResult<u64>> {
        let conn = match connection(held, &self.pool).await {
            Ok(conn) => conn,
            Err(error) => return SharedError::new(error).spread(passes.len()),
        };
        let rows = {
            sqlx::query(RETAIN_MANY)
                .bind(
                    passes
                        .iter()
                        .map(|p| p.stream.aggregate_type())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    passes
                        .iter()
                        .map(|p| p.stream.aggregate_id())
                        .collect::<Vec<_>>(),
                )
                .bind(passes.iter().map(|p| p.keep).collect::<Vec<_>>())
                .bind(passes.iter().map(|p| p.at).collect::<Vec<_>>())
                .fetch_all(&mut *conn)
                .await
        };
        let rows = match rows {
            Ok(rows) if rows.len() == passes.len() => rows,
            Ok(rows) => {
                return SharedError::new(StoreError::Backend {
                    message: format!(
                        "retention of {} streams returned {} rows",
                        passes.len(),
                        rows.len()
                    ),
                    source: None,
                })
                .spread(passes.len());
            }
            Err(err) => {
                return SharedError::new(failed(held, "applying snapshot retention", err))
                    .spread(passes.len());
            }
        };
        rows.iter()
            .map(|row| {
                let deleted: i64 = row
                    .try_get(1)
                    .map_err(|e| map_sqlx("reading a retention result", e))?;
                Ok(deleted.unsigned_abs())
            })
            .collect()
    }
}
