//! Retention after a snapshot is written and verified: of the snapshots at or below the one
//! just written, the newest `keep_newest` stay (and the bases their deltas name), and so does
//! everything younger than `max_age`; the rest is deleted, or, with an archive, moved there.
//! The snapshot just written always stays.
//!
//! Snapshots *above* the one just written are ahead of the stream the actor saw (the event
//! store was restored from an older backup, or an in-memory event store restarted beside a
//! durable snapshot store): activation skips them, so they are not counted among the kept, or
//! each new valid snapshot would be deleted to keep them. Nor are they removed: retention
//! cannot tell them invalid (another writer may see a longer stream, e.g. a new owner of the
//! aggregate), and a snapshot written later at their version replaces them.

use std::sync::Arc;

use event_stores::{SnapshotArchive, SnapshotStore, StreamId};

use crate::metrics::AggregateMetrics;
use crate::settings::Retention;

/// Applies `retention` to `stream` after the snapshot at `written` was stored and verified,
/// archiving what it removes when `archive` is set; failures are logged (the next write tries
/// again), never raised: a command never waits on this.
pub(super) async fn apply(
    store: &dyn SnapshotStore,
    archive: Option<&Arc<dyn SnapshotArchive>>,
    stream: &StreamId,
    written: u64,
    retention: Retention,
    metrics: &AggregateMetrics,
) {
    let outcome = match archive {
        Some(archive) => {
            move_to_archive(store, &**archive, stream, written, retention, metrics).await
        }
        None => delete(store, stream, written, retention, metrics).await,
    };
    if let Err(error) = outcome {
        tracing::warn!(%stream, %error, "snapshot retention failed");
    }
}

/// The time before which snapshots are too old to keep: `max_age` ago, or `None` (keep all by
/// age) when there is no `max_age` or it reaches back before the earliest time representable.
fn age_cutoff(retention: Retention) -> Option<chrono::DateTime<chrono::Utc>> {
    let age = chrono::Duration::from_std(retention.max_age?).ok()?;
    chrono::Utc::now().checked_sub_signed(age)
}

/// Versions to remove, newest first (deltas before the bases they name): of those at or below
/// `written`, beyond the newest `keep_newest`, and older than `max_age`; never `written` (nor,
/// should it be gone, the newest at or below it).
async fn to_remove(
    store: &dyn SnapshotStore,
    stream: &StreamId,
    written: u64,
    retention: Retention,
) -> Result<Vec<event_stores::SnapshotRecord>, event_stores::StoreError> {
    let cutoff = age_cutoff(retention);
    let listed = store.list(stream, 0, written).await?;
    Ok(listed
        .into_iter()
        .enumerate()
        .filter(|(i, record)| {
            *i > 0
                && record.version != written
                && (*i >= retention.keep_newest.max(1)
                    || cutoff.is_some_and(|cutoff| record.taken_at < cutoff))
        })
        .map(|(_, record)| record)
        .collect())
}

async fn delete(
    store: &dyn SnapshotStore,
    stream: &StreamId,
    written: u64,
    retention: Retention,
    metrics: &AggregateMetrics,
) -> Result<(), event_stores::StoreError> {
    let mut deleted = store
        .retain_newest_at_or_below(stream, written, retention.keep_newest)
        .await?;
    if age_cutoff(retention).is_some() {
        for record in to_remove(store, stream, written, retention).await? {
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
    written: u64,
    retention: Retention,
    metrics: &AggregateMetrics,
) -> Result<(), event_stores::StoreError> {
    let mut moved = 0;
    for record in to_remove(store, stream, written, retention).await? {
        let version = record.version;
        // Archived first: a crash between the two leaves a copy in both, never in neither.
        archive.archive(record).await?;
        moved += u64::from(store.delete(stream, version).await?);
    }
    metrics.snapshots_archived(moved);
    Ok(())
}
