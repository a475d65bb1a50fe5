//! What an operator asks about snapshots: [`Executor::snapshots`] lists one aggregate's stored
//! ones, each verified as activation would; [`Executor::archived_snapshots`] lists the archived
//! ones and [`Executor::restore_archived`] brings one back; [`Executor::snapshot_days`] gives a
//! type's per-day statistics as the snapshot store keeps them.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use event_stores::{
    ArchivedSnapshot, SnapshotArchive, SnapshotBase, SnapshotDay, SnapshotRecord, StreamId,
};

use crate::aggregate::Aggregate;
use crate::archive_view::ArchiveView;
use crate::error::ExecutorError;
use crate::executor::Executor;
use crate::hydrate::verify_record;

/// One stored snapshot, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The stream version it holds.
    pub version: u64,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// Its state schema version.
    pub state_schema_version: u32,
    /// Codec and compression names as recorded (`zstd-delta` for a delta).
    pub codec: String,
    /// See [`codec`](Self::codec).
    pub compression: String,
    /// For a delta, the full snapshot it was written against.
    pub base: Option<SnapshotBase>,
    /// Bytes stored.
    pub stored_size: u64,
    /// Bytes before compression.
    pub uncompressed_size: u64,
    /// `Ok` when activation would start from it; otherwise why it would skip it.
    pub verified: Result<(), String>,
}

impl SnapshotInfo {
    fn of(record: &SnapshotRecord, verified: Result<(), String>) -> Self {
        Self {
            version: record.version,
            taken_at: record.taken_at,
            state_schema_version: record.state_schema_version,
            codec: record.codec.clone(),
            compression: record.compression.clone(),
            base: record.base,
            stored_size: record.stored_size,
            uncompressed_size: record.uncompressed_size,
            verified,
        }
    }
}

impl Executor {
    /// The stored snapshots of aggregate `id`, newest first, each checked as activation
    /// would check it (schema, checksum, decoding, a delta's base, its event's id).
    pub async fn snapshots<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<SnapshotInfo>, ExecutorError> {
        let context = &self.registration::<A>(id)?.context;
        let stream = StreamId::new(A::TYPE, id)?;
        let records = context.snapshots.list(&stream, 0, u64::MAX).await?;
        let mut infos = Vec::with_capacity(records.len());
        for record in records {
            let verified =
                verify_record::<A>(&*context.events, &*context.snapshots, record.clone()).await;
            infos.push(SnapshotInfo::of(&record, verified));
        }
        Ok(infos)
    }

    /// The per-day snapshot statistics of the served type `aggregate_type` from `since` on
    /// (UTC days, oldest first), as the snapshot store keeps them: the sum over every process
    /// that wrote snapshots of that type, across restarts. This process's own figures reach
    /// the store within a second of each write, and at once on
    /// [`flush_snapshots`](Self::flush_snapshots) or shutdown; a process that stops without
    /// either (a crash) may lose its last second.
    pub async fn snapshot_days(
        &self,
        aggregate_type: &str,
        since: NaiveDate,
    ) -> Result<Vec<SnapshotDay>, ExecutorError> {
        if self.registered_by_name(aggregate_type).is_none() {
            return Err(ExecutorError::TypeNotServed {
                aggregate_type: aggregate_type.to_owned(),
            });
        }
        Ok(self
            .snapshot_store()
            .snapshot_days(aggregate_type, since)
            .await?)
    }

    /// The archived snapshots of aggregate `id`, newest first; empty without an archive.
    pub async fn archived_snapshots<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<ArchivedSnapshot>, ExecutorError> {
        let Some(archive) = self.archive_of::<A>(id)? else {
            return Ok(Vec::new());
        };
        let stream = StreamId::new(A::TYPE, id)?;
        Ok(archive.list_archived(&stream, 0, u64::MAX).await?)
    }

    /// Brings the archived snapshot of `id` at `version` back into the snapshot store (and,
    /// for a delta, its base if the store lacks it), after checking it opens, then removes
    /// it from the archive. Activation and time travel use it again; the next retention pass
    /// may move it back if it is beyond the policy.
    pub async fn restore_archived<A: Aggregate>(
        &self,
        id: &str,
        version: u64,
    ) -> Result<SnapshotInfo, ExecutorError> {
        let stream = StreamId::new(A::TYPE, id)?;
        let context = &self.registration::<A>(id)?.context;
        let archive = self.archive_of::<A>(id)?.ok_or(ExecutorError::NoArchive {
            aggregate_type: A::TYPE,
        })?;
        let record = archive
            .load_archived(&stream, version)
            .await?
            .filter(|r| r.version == version)
            .ok_or_else(|| ExecutorError::NotArchived {
                aggregate_type: A::TYPE,
                id: id.to_owned(),
                version,
            })?;
        // Checked against the live store with the archive behind it: a delta's base may be in
        // either.
        let view = ArchiveView::new(Arc::clone(&context.snapshots), Arc::clone(&archive));
        verify_record::<A>(&*context.events, &view, record.clone())
            .await
            .map_err(|reason| ExecutorError::CannotRestore { version, reason })?;
        if let Some(base) = record.base {
            let in_store = context
                .snapshots
                .load_at_or_before_version(&stream, base.version)
                .await?
                .is_some_and(|r| r.version == base.version);
            if !in_store
                && let Some(base_record) = archive
                    .load_archived(&stream, base.version)
                    .await?
                    .filter(|r| r.version == base.version)
            {
                context.snapshots.save(base_record).await?;
                archive.delete_archived(&stream, base.version).await?;
            }
        }
        context.snapshots.save(record.clone()).await?;
        archive.delete_archived(&stream, version).await?;
        Ok(SnapshotInfo::of(&record, Ok(())))
    }

    fn archive_of<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Option<Arc<dyn SnapshotArchive>>, ExecutorError> {
        Ok(self.registration::<A>(id)?.context.settings.archive.clone())
    }
}
