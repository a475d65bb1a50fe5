use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::error::StoreResult;
use crate::limits::StoreLimits;
use crate::snapshot::{SnapshotRecord, SnapshotStats};
use crate::snapshot_days::{SnapshotDay, prepare_addition};
use crate::snapshot_store::SnapshotStore;
use crate::stream::StreamId;

/// A snapshot store held in process memory, one ordered map of versions per stream.
#[derive(Default, Clone)]
pub struct InMemorySnapshotStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    streams: DashMap<StreamId, BTreeMap<u64, SnapshotRecord>>,
    /// Per-day statistics by aggregate type, then day.
    days: Mutex<BTreeMap<String, BTreeMap<NaiveDate, SnapshotDay>>>,
    limits: StoreLimits,
}

impl InMemorySnapshotStore {
    /// An empty store with default [`StoreLimits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: StoreLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                ..Inner::default()
            }),
        }
    }

    fn with_stream<T>(
        &self,
        stream: &StreamId,
        read: impl FnOnce(&BTreeMap<u64, SnapshotRecord>) -> T,
    ) -> Option<T> {
        self.inner.streams.get(stream).map(|s| read(s.value()))
    }
}

/// Replaces the snapshots in `older` (to be deleted) with `kept`, plus those of `older` that a
/// snapshot of `kept` names as its base; returns how many were deleted.
fn drop_all_but_bases(
    older: &mut BTreeMap<u64, SnapshotRecord>,
    mut kept: BTreeMap<u64, SnapshotRecord>,
) -> u64 {
    let bases: Vec<u64> = kept
        .values()
        .filter_map(|r| r.base.map(|b| b.version))
        .collect();
    for version in bases {
        if let Some(base) = older.remove(&version) {
            kept.insert(version, base);
        }
    }
    let deleted = older.len() as u64;
    *older = kept;
    deleted
}

#[async_trait]
impl SnapshotStore for InMemorySnapshotStore {
    async fn save(&self, record: SnapshotRecord) -> StoreResult<()> {
        self.inner.limits.check_snapshot(&record)?;
        self.inner
            .streams
            .entry(record.stream.clone())
            .or_default()
            .insert(record.version, record);
        Ok(())
    }

    async fn load_latest(&self, stream: &StreamId) -> StoreResult<Option<SnapshotRecord>> {
        Ok(self
            .with_stream(stream, |s| s.values().next_back().cloned())
            .flatten())
    }

    async fn load_at_or_before_version(
        &self,
        stream: &StreamId,
        at_or_before: u64,
    ) -> StoreResult<Option<SnapshotRecord>> {
        Ok(self
            .with_stream(stream, |s| {
                s.range(..=at_or_before).next_back().map(|(_, r)| r.clone())
            })
            .flatten())
    }

    async fn load_at_or_before_time(
        &self,
        stream: &StreamId,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<SnapshotRecord>> {
        Ok(self
            .with_stream(stream, |s| {
                s.values().rev().find(|r| r.taken_at <= at).cloned()
            })
            .flatten())
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
        Ok(self
            .with_stream(stream, |s| {
                s.range(from..=to).rev().map(|(_, r)| r.clone()).collect()
            })
            .unwrap_or_default())
    }

    async fn delete(&self, stream: &StreamId, version: u64) -> StoreResult<bool> {
        let Some(mut s) = self.inner.streams.get_mut(stream) else {
            return Ok(false);
        };
        // A base that a kept delta names stays (see `SnapshotStore::delete`).
        let named = s
            .values()
            .any(|r| r.version != version && r.base.is_some_and(|b| b.version == version));
        Ok(!named && s.remove(&version).is_some())
    }

    async fn delete_older_than(&self, stream: &StreamId, before: u64) -> StoreResult<u64> {
        let Some(mut s) = self.inner.streams.get_mut(stream) else {
            return Ok(0);
        };
        let kept = s.split_off(&before);
        Ok(drop_all_but_bases(&mut s, kept))
    }

    async fn retain_newest(&self, stream: &StreamId, keep: usize) -> StoreResult<u64> {
        self.retain_newest_at_or_below(stream, u64::MAX, keep).await
    }

    async fn retain_newest_at_or_below(
        &self,
        stream: &StreamId,
        at_or_below: u64,
        keep: usize,
    ) -> StoreResult<u64> {
        let keep = keep.max(1);
        let Some(mut s) = self.inner.streams.get_mut(stream) else {
            return Ok(0);
        };
        // Only those at or below count; the cut falls among them, so everything above stays
        // (with the bases it names).
        let excess = s.range(..=at_or_below).count().saturating_sub(keep);
        if excess == 0 {
            return Ok(0);
        }
        let Some(&cut) = s.keys().nth(excess) else {
            return Ok(0);
        };
        let kept = s.split_off(&cut);
        Ok(drop_all_but_bases(&mut s, kept))
    }

    async fn stats(&self, stream: &StreamId) -> StoreResult<SnapshotStats> {
        Ok(self
            .with_stream(stream, |s| SnapshotStats {
                count: s.len() as u64,
                total_bytes: s.values().map(|r| r.stored_size).sum(),
                newest_version: s.keys().next_back().copied(),
                oldest_taken_at: s.values().map(|r| r.taken_at).min(),
                newest_taken_at: s.values().map(|r| r.taken_at).max(),
            })
            .unwrap_or_default())
    }

    async fn add_snapshot_days(
        &self,
        aggregate_type: &str,
        days: &[SnapshotDay],
    ) -> StoreResult<()> {
        let additions = prepare_addition(aggregate_type, days)?;
        if additions.is_empty() {
            return Ok(());
        }
        let mut stored = self.inner.days.lock();
        let of_type = stored.entry(aggregate_type.to_owned()).or_default();
        for addition in additions {
            of_type
                .entry(addition.day)
                .or_insert_with(|| SnapshotDay::new(addition.day))
                .add(&addition);
        }
        Ok(())
    }

    async fn snapshot_days(
        &self,
        aggregate_type: &str,
        since: NaiveDate,
    ) -> StoreResult<Vec<SnapshotDay>> {
        Ok(self
            .inner
            .days
            .lock()
            .get(aggregate_type)
            .map(|days| days.range(since..).map(|(_, day)| day.clone()).collect())
            .unwrap_or_default())
    }
}
