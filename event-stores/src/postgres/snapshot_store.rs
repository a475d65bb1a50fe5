//! The PostgreSQL snapshot store (the "state provider").
//!
//! Every lookup of one stream is a scan of the primary key `(aggregate_type, aggregate_id,
//! version)`: "newest at or before version V" walks it backwards from V and stops at the first
//! row. `taken_at` is kept at microsecond precision, as PostgreSQL stores it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::error::StoreResult;
use crate::invalid_input::InvalidInput;
use crate::limits::StoreLimits;
use crate::snapshot::{SnapshotRecord, SnapshotStats};
use crate::snapshot_days::SnapshotDay;
use crate::snapshot_store::SnapshotStore;
use crate::stream::StreamId;

use super::batcher::{BatchStats, Statement};
use super::config::{DEFAULT_CLIENT_TIMEOUT, GroupCommit, PgConfig, migrate};
use super::connection::read_within;
use super::error::map_sqlx;
use super::rows::{decode_record, to_u64};
use super::snapshot_writes::{Retain, RetainStatement, Save, SaveStatement, SnapshotWrites};

// Static statements (not built with format!) so sqlx can cache their prepared forms.
const LOAD_AT_OR_BEFORE_VERSION: &str = r#"
SELECT version, last_event_id, state_schema_version, codec, compression, checksum,
       uncompressed_size, stored_size, taken_at, bytes, base_version, base_checksum
FROM snapshots
WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND version <= $3::bigint
ORDER BY version DESC
LIMIT 1
"#;

const LOAD_AT_OR_BEFORE_TIME: &str = r#"
SELECT version, last_event_id, state_schema_version, codec, compression, checksum,
       uncompressed_size, stored_size, taken_at, bytes, base_version, base_checksum
FROM snapshots
WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND taken_at <= $3::timestamptz
ORDER BY version DESC
LIMIT 1
"#;

const LIST: &str = r#"
SELECT version, last_event_id, state_schema_version, codec, compression, checksum,
       uncompressed_size, stored_size, taken_at, bytes, base_version, base_checksum
FROM snapshots
WHERE aggregate_type = $1::text AND aggregate_id = $2::text
  AND version >= $3::bigint AND version <= $4::bigint
ORDER BY version DESC
"#;

// Deletes never take a base that another kept snapshot names (`base_version`): a delta cannot
// be read without it. A stream has few snapshots, so the NOT EXISTS is a short scan of its
// primary-key range.
const DELETE: &str = r#"
DELETE FROM snapshots s
WHERE s.aggregate_type = $1::text AND s.aggregate_id = $2::text AND s.version = $3::bigint
  AND NOT EXISTS (
      SELECT 1 FROM snapshots d
      WHERE d.aggregate_type = s.aggregate_type AND d.aggregate_id = s.aggregate_id
        AND d.version <> s.version AND d.base_version = s.version)
"#;

const DELETE_OLDER_THAN: &str = r#"
DELETE FROM snapshots s
WHERE s.aggregate_type = $1::text AND s.aggregate_id = $2::text AND s.version < $3::bigint
  AND NOT EXISTS (
      SELECT 1 FROM snapshots d
      WHERE d.aggregate_type = s.aggregate_type AND d.aggregate_id = s.aggregate_id
        AND d.version >= $3::bigint AND d.base_version = s.version)
"#;

const STATS: &str = r#"
SELECT COUNT(*), COALESCE(SUM(stored_size), 0)::bigint, MAX(version), MIN(taken_at),
       MAX(taken_at)
FROM snapshots
WHERE aggregate_type = $1::text AND aggregate_id = $2::text
"#;

/// A [`SnapshotStore`] on PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgSnapshotStore {
    pool: PgPool,
    limits: StoreLimits,
    /// How long a read waits for the server's answer ([`PgConfig::client_timeout`]).
    client_timeout: Duration,
    /// Saves and retention of many streams per statement; `None` sends each alone.
    writes: Option<Arc<SnapshotWrites>>,
}

impl std::fmt::Debug for PgSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSnapshotStore")
            .field("limits", &self.limits)
            .field("client_timeout", &self.client_timeout)
            .field("batched_writes", &self.writes.is_some())
            .finish_non_exhaustive()
    }
}

impl PgSnapshotStore {
    /// Opens a pool as `config` says, migrates the schema (unless turned off) and returns the
    /// store. Fails with [`StoreError::Unavailable`](crate::StoreError::Unavailable) when the
    /// server cannot be reached in time.
    pub async fn connect(config: &PgConfig) -> StoreResult<Self> {
        let pool = config.connect_pool().await?;
        Ok(Self::with_migrated_pool(pool, config.limits)
            .with_client_timeout(config.client_timeout())
            .with_group_commit(config.group_commit))
    }

    /// A store on an existing pool (for example the one of a
    /// [`PgEventStore`](super::PgEventStore)). Runs the migrations first; they are idempotent.
    /// Its reads wait [`DEFAULT_CLIENT_TIMEOUT`] for an answer; set the pool's own with
    /// [`with_client_timeout`](Self::with_client_timeout) (`PgConfig::client_timeout`).
    pub async fn from_pool(pool: PgPool, limits: StoreLimits) -> StoreResult<Self> {
        migrate(&pool).await?;
        Ok(Self::with_migrated_pool(pool, limits))
    }

    /// A store on a pool whose database already has the schema; does no I/O. Saves and
    /// retention are batched as with the default [`GroupCommit`].
    pub fn with_migrated_pool(pool: PgPool, limits: StoreLimits) -> Self {
        Self {
            pool,
            limits,
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
            writes: None,
        }
        .with_group_commit(GroupCommit::default())
    }

    /// Sets how long a read (a load, a list, the stats) waits for the server's answer before
    /// its connection is closed and the read reported
    /// [`StoreError::Unavailable`](crate::StoreError::Unavailable);
    /// [`connect`](Self::connect) takes it from [`PgConfig::client_timeout`].
    pub fn with_client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout;
        self
    }

    /// Batches saves and retention passes of concurrent snapshot writes (many streams per
    /// statement, as [`GroupCommit`] batches appends) while `settings.enabled`, with its
    /// linger; otherwise each is its own statement.
    pub fn with_group_commit(mut self, settings: GroupCommit) -> Self {
        self.writes = settings
            .enabled
            .then(|| Arc::new(SnapshotWrites::new(&self.pool, settings.linger)));
        self
    }

    /// How saves (first) and retention passes (second) were batched so far on this store and
    /// its clones (all zero when batching is off).
    pub fn write_batch_stats(&self) -> (BatchStats, BatchStats) {
        self.writes.as_ref().map_or_else(Default::default, |w| {
            (w.saves.counters().stats(), w.retention.counters().stats())
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The limits in force.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Closes the pool: waits for connections in use to come back, then closes all of them.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn fetch_one_record(
        &self,
        stream: &StreamId,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> StoreResult<Option<SnapshotRecord>> {
        let row = read_within(
            &self.pool,
            self.client_timeout,
            "loading a snapshot",
            async |conn| query.fetch_optional(conn).await,
        )
        .await?;
        row.map(|row| decode_record(&row, stream.clone()))
            .transpose()
    }
}

#[async_trait]
impl SnapshotStore for PgSnapshotStore {
    fn location(&self) -> Option<String> {
        Some(super::connection::location(&self.pool))
    }

    async fn save(&self, record: SnapshotRecord) -> StoreResult<()> {
        self.save_and_read_back(record).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", name = "pg.save_snapshot", skip_all, fields(stream = %record.stream, version = record.version, bytes = record.stored_size))]
    async fn save_and_read_back(&self, record: SnapshotRecord) -> StoreResult<SnapshotRecord> {
        self.limits.check_snapshot(&record)?;
        let version = to_i64(record.version, "snapshot version")?;
        let uncompressed_size = to_i64(record.uncompressed_size, "snapshot uncompressed size")?;
        let stored_size = to_i64(record.stored_size, "snapshot stored size")?;
        let base_version = record
            .base
            .map(|base| to_i64(base.version, "snapshot base version"))
            .transpose()?;
        let save = Save {
            record,
            version,
            uncompressed_size,
            stored_size,
            base_version,
        };
        match &self.writes {
            Some(writes) => writes.saves.call(save).await,
            // The batch statement with one row.
            None => one(SaveStatement::new(&self.pool)
                .send(&mut None, &[save])
                .await),
        }
    }

    async fn load_latest(&self, stream: &StreamId) -> StoreResult<Option<SnapshotRecord>> {
        self.load_at_or_before_version(stream, u64::MAX).await
    }

    #[tracing::instrument(level = "debug", name = "pg.load_snapshot", skip_all, fields(stream = %stream, at_or_before = at_or_before))]
    async fn load_at_or_before_version(
        &self,
        stream: &StreamId,
        at_or_before: u64,
    ) -> StoreResult<Option<SnapshotRecord>> {
        let bound = i64::try_from(at_or_before).unwrap_or(i64::MAX);
        let query = sqlx::query(LOAD_AT_OR_BEFORE_VERSION)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(bound);
        self.fetch_one_record(stream, query).await
    }

    #[tracing::instrument(level = "debug", name = "pg.load_snapshot_at_time", skip_all, fields(stream = %stream))]
    async fn load_at_or_before_time(
        &self,
        stream: &StreamId,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<SnapshotRecord>> {
        let query = sqlx::query(LOAD_AT_OR_BEFORE_TIME)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(at);
        self.fetch_one_record(stream, query).await
    }

    async fn list(
        &self,
        stream: &StreamId,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<SnapshotRecord>> {
        if from > to {
            return Ok(Vec::new());
        }
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        let to = i64::try_from(to).unwrap_or(i64::MAX);
        let rows = read_within(
            &self.pool,
            self.client_timeout,
            "listing snapshots",
            async |conn| {
                sqlx::query(LIST)
                    .bind(stream.aggregate_type())
                    .bind(stream.aggregate_id())
                    .bind(from)
                    .bind(to)
                    .fetch_all(conn)
                    .await
            },
        )
        .await?;
        rows.iter()
            .map(|row| decode_record(row, stream.clone()))
            .collect()
    }

    async fn delete(&self, stream: &StreamId, version: u64) -> StoreResult<bool> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(false);
        };
        let done = sqlx::query(DELETE)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(version)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("deleting a snapshot", e))?;
        Ok(done.rows_affected() > 0)
    }

    #[tracing::instrument(level = "debug", name = "pg.delete_snapshots", skip_all, fields(stream = %stream, before = before))]
    async fn delete_older_than(&self, stream: &StreamId, before: u64) -> StoreResult<u64> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let done = sqlx::query(DELETE_OLDER_THAN)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("deleting old snapshots", e))?;
        Ok(done.rows_affected())
    }

    async fn retain_newest(&self, stream: &StreamId, keep: usize) -> StoreResult<u64> {
        self.retain_newest_at_or_below(stream, u64::MAX, keep).await
    }

    #[tracing::instrument(level = "debug", name = "pg.retain_snapshots", skip_all, fields(stream = %stream, at_or_below = at_or_below, keep = keep))]
    async fn retain_newest_at_or_below(
        &self,
        stream: &StreamId,
        at_or_below: u64,
        keep: usize,
    ) -> StoreResult<u64> {
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        // No stored version exceeds i64::MAX, so a larger bound is no bound.
        let at = i64::try_from(at_or_below).unwrap_or(i64::MAX);
        let pass = Retain {
            stream: stream.clone(),
            keep,
            at,
        };
        match &self.writes {
            Some(writes) => writes.retention.call(pass).await,
            None => one(RetainStatement::new(&self.pool)
                .send(&mut None, &[pass])
                .await),
        }
    }

    async fn stats(&self, stream: &StreamId) -> StoreResult<SnapshotStats> {
        let row = read_within(
            &self.pool,
            self.client_timeout,
            "reading snapshot stats",
            async |conn| {
                sqlx::query(STATS)
                    .bind(stream.aggregate_type())
                    .bind(stream.aggregate_id())
                    .fetch_one(conn)
                    .await
            },
        )
        .await?;
        let decode = |e| map_sqlx("reading snapshot stats", e);
        let count: i64 = row.try_get(0).map_err(decode)?;
        let total_bytes: i64 = row.try_get(1).map_err(decode)?;
        let newest_version: Option<i64> = row.try_get(2).map_err(decode)?;
        Ok(SnapshotStats {
            count: to_u64(count, "count")?,
            total_bytes: to_u64(total_bytes, "total size")?,
            newest_version: newest_version.map(|v| to_u64(v, "version")).transpose()?,
            oldest_taken_at: row.try_get(3).map_err(decode)?,
            newest_taken_at: row.try_get(4).map_err(decode)?,
        })
    }

    async fn add_snapshot_days(
        &self,
        aggregate_type: &str,
        days: &[SnapshotDay],
    ) -> StoreResult<()> {
        super::snapshot_days::add(&self.pool, aggregate_type, days).await
    }

    async fn snapshot_days(
        &self,
        aggregate_type: &str,
        since: NaiveDate,
    ) -> StoreResult<Vec<SnapshotDay>> {
        super::snapshot_days::read(&self.pool, aggregate_type, since).await
    }
}

/// The outcome of a batch of one.
fn one<T>(outcomes: Vec<StoreResult<T>>) -> StoreResult<T> {
    outcomes.into_iter().next().unwrap_or_else(|| {
        Err(crate::error::StoreError::Backend {
            message: "a statement of one returned no outcome".into(),
            source: None,
        })
    })
}

/// A u64 for a BIGINT column; larger values are refused as input, before anything is written.
fn to_i64(value: u64, what: &'static str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| {
        InvalidInput::PayloadTooLarge {
            what,
            size: usize::try_from(value).unwrap_or(usize::MAX),
            limit: usize::try_from(i64::MAX).unwrap_or(usize::MAX),
        }
        .into()
    })
}
