//! [`InMemorySnapshotArchive`]: archived snapshots in process memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;

use crate::archive::{ArchivedSnapshot, SnapshotArchive};
use crate::{SnapshotRecord, StoreResult, StreamId};

/// An archive in process memory (for tests and the embedded default). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct InMemorySnapshotArchive {
    streams: Arc<DashMap<StreamId, BTreeMap<u64, ArchivedSnapshot>>>,
}

impl InMemorySnapshotArchive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SnapshotArchive for InMemorySnapshotArchive {
    async fn archive(&self, record: SnapshotRecord) -> StoreResult<()> {
        let archived = ArchivedSnapshot {
            archived_at: super::now_micros(),
            record,
        };
        self.streams
            .entry(archived.record.stream.clone())
            .or_default()
            .insert(archived.record.version, archived);
        Ok(())
    }

    async fn list_archived(
        &self,
        stream: &StreamId,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<ArchivedSnapshot>> {
        if from > to {
            return Ok(Vec::new());
        }
        Ok(self.streams.get(stream).map_or_else(Vec::new, |versions| {
            versions
                .range(from..=to)
                .rev()
                .map(|(_, a)| a.clone())
                .collect()
        }))
    }

    async fn load_archived(
        &self,
        stream: &StreamId,
        at_or_before: u64,
    ) -> StoreResult<Option<SnapshotRecord>> {
        Ok(self.streams.get(stream).and_then(|versions| {
            versions
                .range(..=at_or_before)
                .next_back()
                .map(|(_, a)| a.record.clone())
        }))
    }

    async fn delete_archived(&self, stream: &StreamId, version: u64) -> StoreResult<bool> {
        Ok(self
            .streams
            .get_mut(stream)
            .is_some_and(|mut versions| versions.remove(&version).is_some()))
    }
}
