//! [`ArchiveView`]: a snapshot store that reads the live snapshots and the archived ones as
//! one, for time travel that may start from an archived snapshot (and for a delta whose base
//! was archived). Writes go to the live store only.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use event_stores::{
    SnapshotArchive, SnapshotRecord, SnapshotStats, SnapshotStore, StoreResult, StreamId,
};

/// The live snapshot store with an archive behind it.
pub(crate) struct ArchiveView {
    live: Arc<dyn SnapshotStore>,
    archive: Arc<dyn SnapshotArchive>,
}

impl ArchiveView {
    pub(crate) fn new(live: Arc<dyn SnapshotStore>, archive: Arc<dyn SnapshotArchive>) -> Self {
        Self { live, archive }
    }
}

/// The one of `a` and `b` with the higher version (`a` on a tie: the live copy).
fn newer(a: Option<SnapshotRecord>, b: Option<SnapshotRecord>) -> Option<SnapshotRecord> {
    match (a, b) {
        (Some(a), Some(b)) if b.version > a.version => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

#[async_trait]
impl SnapshotStore for ArchiveView {
    async fn save(&self, record: SnapshotRecord) -> StoreResult<()> {
        self.live.save(record).await
    }

    async fn load_latest(&self, stream: &StreamId) -> StoreResult<Option<SnapshotRecord>> {
        self.load_at_or_before_version(stream, u64::MAX).await
    }

    async fn load_at_or_before_version(
        &self,
        stream: &StreamId,
        at_or_before: u64,
    ) -> StoreResult<Option<SnapshotRecord>> {
        let live = self
            .live
            .load_at_or_before_version(stream, at_or_before)
            .await?;
        let archived = self.archive.load_archived(stream, at_or_before).await?;
        Ok(newer(live, archived))
    }

    async fn load_at_or_before_time(
        &self,
        stream: &StreamId,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<SnapshotRecord>> {
        let live = self.live.load_at_or_before_time(stream, at).await?;
        // Archives are looked up by version; a stream's archive is short, so scan it.
        let archived = self
            .archive
            .list_archived(stream, 0, u64::MAX)
            .await?
            .into_iter()
            .map(|a| a.record)
            .find(|r| r.taken_at <= at);
        Ok(newer(live, archived))
    }

    async fn list(
        &self,
        stream: &StreamId,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<SnapshotRecord>> {
        let mut all = self.live.list(stream, from, to).await?;
        for archived in self.archive.list_archived(stream, from, to).await? {
            if all.iter().all(|r| r.version != archived.record.version) {
                all.push(archived.record);
            }
        }
        all.sort_by_key(|r| std::cmp::Reverse(r.version));
        Ok(all)
    }

    async fn delete(&self, stream: &StreamId, version: u64) -> StoreResult<bool> {
        self.live.delete(stream, version).await
    }

    async fn delete_older_than(&self, stream: &StreamId, before: u64) -> StoreResult<u64> {
        self.live.delete_older_than(stream, before).await
    }

    async fn retain_newest(&self, stream: &StreamId, keep: usize) -> StoreResult<u64> {
        self.live.retain_newest(stream, keep).await
    }

    async fn stats(&self, stream: &StreamId) -> StoreResult<SnapshotStats> {
        self.live.stats(stream).await
    }
}
