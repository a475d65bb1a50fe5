//! Snapshot archives: where retention moves old snapshots instead of deleting them.
//!
//! An archive keeps whole [`SnapshotRecord`]s (bytes, checksum, base and all), so an archived
//! snapshot can be listed, restored into the snapshot store unchanged, or read by time travel
//! directly. Three kinds: [`InMemorySnapshotArchive`](crate::memory::InMemorySnapshotArchive),
//! [`FileSnapshotArchive`](crate::file_archive::FileSnapshotArchive) (a directory, e.g. on
//! cheaper storage) and, with PostgreSQL,
//! [`PgSnapshotArchive`](crate::postgres::PgSnapshotArchive) (the `snapshot_archive` table).
//! All pass the cases in `event_stores::contract::archive` (feature `test-support`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{SnapshotRecord, StoreResult, StreamId};

/// An archived snapshot: the record as it was stored, and when it was archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedSnapshot {
    /// The snapshot, unchanged.
    pub record: SnapshotRecord,
    /// When it was moved to the archive.
    pub archived_at: DateTime<Utc>,
}

/// Keeps snapshots moved out of the snapshot store.
#[async_trait]
pub trait SnapshotArchive: Send + Sync + 'static {
    /// Archives `record` (replacing an archived one at the same stream and version, so
    /// archiving twice is harmless).
    async fn archive(&self, record: SnapshotRecord) -> StoreResult<()>;

    /// Archived snapshots of `stream` with `from <= version <= to`, newest first.
    async fn list_archived(
        &self,
        stream: &StreamId,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<ArchivedSnapshot>>;

    /// The newest archived snapshot of `stream` with `version <= at_or_before`, if any.
    async fn load_archived(
        &self,
        stream: &StreamId,
        at_or_before: u64,
    ) -> StoreResult<Option<SnapshotRecord>>;

    /// Removes the archived snapshot at `version`; true when there was one.
    async fn delete_archived(&self, stream: &StreamId, version: u64) -> StoreResult<bool>;
}
