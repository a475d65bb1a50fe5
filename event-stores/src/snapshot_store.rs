//! The snapshot store contract (the "state provider").

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::error::{StoreError, StoreResult};
use crate::snapshot::{SnapshotRecord, SnapshotStats};
use crate::snapshot_days::SnapshotDay;
use crate::stream::StreamId;

/// Keeps snapshots of aggregate state, separately from events (it may be another backend).
///
/// A snapshot is an optimisation: readers verify what they load and fall back to older
/// snapshots or to the events. The store itself only keeps bytes and their metadata.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Saves a snapshot. Saving again at the same `(stream, version)` replaces the record.
    async fn save(&self, record: SnapshotRecord) -> StoreResult<()>;

    /// Saves `record` like [`save`](Self::save) and returns the record the store now holds at
    /// its `(stream, version)`, for the caller to verify before trusting it (the snapshot
    /// writer does, before retention deletes older ones). By default a save, then a read;
    /// PostgreSQL answers both with one statement (`RETURNING`), shared with other saves.
    async fn save_and_read_back(&self, record: SnapshotRecord) -> StoreResult<SnapshotRecord> {
        let (stream, version) = (record.stream.clone(), record.version);
        self.save(record).await?;
        match self.load_at_or_before_version(&stream, version).await? {
            Some(stored) if stored.version == version => Ok(stored),
            _ => Err(StoreError::Backend {
                message: format!(
                    "the snapshot of {stream} at {version} is not in the store after saving it"
                ),
                source: None,
            }),
        }
    }

    /// The newest snapshot of `stream` (highest version), if any.
    async fn load_latest(&self, stream: &StreamId) -> StoreResult<Option<SnapshotRecord>>;

    /// The newest snapshot with `version <= at_or_before`, if any.
    async fn load_at_or_before_version(
        &self,
        stream: &StreamId,
        at_or_before: u64,
    ) -> StoreResult<Option<SnapshotRecord>>;

    /// The newest snapshot (highest version) taken at or before `at`, if any.
    async fn load_at_or_before_time(
        &self,
        stream: &StreamId,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<SnapshotRecord>>;

    /// Snapshots with `from <= version <= to`, newest first.
    async fn list(&self, stream: &StreamId, from: u64, to: u64)
    -> StoreResult<Vec<SnapshotRecord>>;

    /// Deletes the snapshot at `version`; true when one was deleted. A snapshot that another
    /// kept snapshot names as its base ([`SnapshotRecord::base`]) is not deleted (false): a
    /// delta cannot be read without its base, so delete the deltas first.
    async fn delete(&self, stream: &StreamId, version: u64) -> StoreResult<bool>;

    /// Deletes every snapshot with `version < before`, except those that a snapshot at or
    /// after `before` names as its base; returns how many were deleted.
    async fn delete_older_than(&self, stream: &StreamId, before: u64) -> StoreResult<u64>;

    /// Keeps the newest `keep` snapshots, and the bases those name, and deletes the rest;
    /// returns how many were deleted. `keep == 0` is treated as 1: retention never removes the
    /// newest snapshot, nor a base that a kept delta needs.
    async fn retain_newest(&self, stream: &StreamId, keep: usize) -> StoreResult<u64>;

    /// Retention after writing the snapshot at `at_or_below`: keeps the newest `keep`
    /// snapshots with `version <= at_or_below` (the one at `at_or_below` among them), and the
    /// bases those name, and deletes the other snapshots at or below it; returns how many were
    /// deleted. `keep == 0` is treated as 1.
    ///
    /// Snapshots *above* `at_or_below` are neither counted among the kept nor deleted, nor are
    /// the bases they name: they are ahead of the stream the writer saw (the event store was
    /// restored from an older backup, or restarted empty beside this store), so activation skips
    /// them, and counting them would delete the newest snapshot that is valid. Retention does
    /// not delete them either: it cannot tell that they are invalid (another writer may see a
    /// longer stream), and a snapshot written later at their version replaces them.
    ///
    /// By default a [`list`](Self::list) and a [`delete`](Self::delete) per removed snapshot,
    /// newest first (so deltas go before their bases); both stores of this crate do it in one
    /// statement.
    async fn retain_newest_at_or_below(
        &self,
        stream: &StreamId,
        at_or_below: u64,
        keep: usize,
    ) -> StoreResult<u64> {
        let mut deleted = 0;
        let listed = self.list(stream, 0, at_or_below).await?;
        for record in listed.into_iter().skip(keep.max(1)) {
            deleted += u64::from(self.delete(stream, record.version).await?);
        }
        Ok(deleted)
    }

    /// Count, total bytes, newest version and oldest/newest `taken_at` for `stream`.
    async fn stats(&self, stream: &StreamId) -> StoreResult<SnapshotStats>;

    /// Adds `days` to the stored per-day snapshot statistics of `aggregate_type`: each figure
    /// is summed into that day's row, made when missing (a day given twice counts twice). The
    /// snapshot writer calls this with what it did. Refused with
    /// [`InvalidInput`](crate::InvalidInput), storing nothing, for a bad type or a figure
    /// beyond [`MAX_DAY_FIGURE`](crate::MAX_DAY_FIGURE). By default nothing is kept, and
    /// [`snapshot_days`](Self::snapshot_days) answers with no days: both stores of this crate
    /// keep them.
    async fn add_snapshot_days(
        &self,
        aggregate_type: &str,
        days: &[SnapshotDay],
    ) -> StoreResult<()> {
        let _ = (aggregate_type, days);
        Ok(())
    }

    /// The stored per-day snapshot statistics of `aggregate_type` from `since` on (inclusive),
    /// oldest first: the sum of every addition, from every process that wrote to this store.
    async fn snapshot_days(
        &self,
        aggregate_type: &str,
        since: NaiveDate,
    ) -> StoreResult<Vec<SnapshotDay>> {
        let _ = (aggregate_type, since);
        Ok(Vec::new())
    }

    /// Where the snapshots are kept, when an event store might share that place and read a
    /// snapshot together with the events after it (see
    /// [`EventStore::read_start`](crate::EventStore::read_start)): for PostgreSQL the server
    /// and database. `None` (the default) shares nothing.
    fn location(&self) -> Option<String> {
        None
    }
}
