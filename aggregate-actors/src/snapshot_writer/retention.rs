//! Retention after a snapshot is written and verified: the newest `keep_newest` snapshots stay
//! (and the bases their deltas name), and so does everything younger than `max_age`; the rest
//! is deleted, or, with an archive, moved there.

use std::sync::Arc;

use event_stores::{SnapshotArchive, SnapshotStore, StreamId};

use crate::metrics::AggregateMetrics;
use crate::settings::Retention;

/// Applies `retention` to `stream`, archiving what it removes when `archive` is set; failures
/// are logged (the next write tries again), never raised: a command never waits on this.
pub(super) async fn apply(
    store: &dyn SnapshotStore,
    archive: Option<&Arc<dyn SnapshotArchive>>,
    stream: &StreamId,
    retention: Retention,
    metrics: &AggregateMetrics,
) {
    let outcome = match archive {
        Some(archive) => move_to_archive(store, &**archive, stream, retention, metrics).await,
        None => delete(store, stream, retention, metrics).await,
    };
    if let Err(error) = outcome {
        tracing::warn!(%stream, %error, "snapshot retention failed");
    }
}

/// Versions to remove, newest first (deltas before the bases they name): beyond the newest
/// `keep_newest`, and older than `max_age` except the newest of all.
async fn to_remove(
    store: &dyn SnapshotStore,
    stream: &StreamId,
    retention: Retention,
) -> Result<Vec<event_stores::SnapshotRecord>, event_stores::StoreError> {
    let cutoff = retention
        .max_age
        .and_then(|age| chrono::Duration::from_std(age).ok())
        .map(|age| chrono::Utc::now() - age);
    let listed = store.list(stream, 0, u64::MAX).await?;
    Ok(listed
        .into_iter()
        .enumerate()
        .filter(|(i, record)| {
            *i >= retention.keep_newest.max(1)
                || (*i > 0 && cutoff.is_some_and(|cutoff| record.taken_at < cutoff))
        })
        .map(|(_, record)| record)
        .collect())
}

async fn delete(
    store: &dyn SnapshotStore,
    stream: &StreamId,
    retention: Retention,
    metrics: &AggregateMetrics,
) -> Result<(), event_stores::StoreError> {
    let mut deleted = store.retain_newest(stream, retention.keep_newest).await?;
    if retention.max_age.is_some() {
        for record in to_remove(store, stream, retention).await? {
            // False for a base a kept delta still needs: it stays.
            deleted += u64::from(store.delete(stream, record.version).await?);
        }
    }
    metrics.snapshots_deleted(deleted);
    Ok(())
}

/// Archives each snapshot retention removes, then deletes it from the store. A base that a
/// kept delta still names is archived but stays in the store (the store refuses to delete
/// it); a later pass moves it once its deltas are gone.
async fn move_to_archive(
    store: &dyn SnapshotStore,
    archive: &dyn SnapshotArchive,
    stream: &StreamId,
    retention: Retention,
    metrics: &AggregateMetrics,
) -> Result<(), event_stores::StoreError> {
    let mut moved = 0;
    for record in to_remove(store, stream, retention).await? {
        let version = record.version;
        // Archived first: a crash between the two leaves a copy in both, never in neither.
        archive.archive(record).await?;
        moved += u64::from(store.delete(stream, version).await?);
    }
    metrics.snapshots_archived(moved);
    Ok(())
}
