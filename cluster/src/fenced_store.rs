//! [`FencedEventStore`]: an event store whose every append carries this node's fencing token
//! for the stream's shard, so a node that lost a shard cannot write to it.

use std::sync::Arc;

use async_trait::async_trait;
use event_stores::{
    AppendReceipt, CrashSafety, EventStore, Fence, NewEvent, ReadQuery, RecordedEvent, StoreError,
    StoreResult, StreamId,
};
use uuid::Uuid;

use crate::owned::OwnedShards;
use crate::shard::shard_of;

/// Wraps an event store (PostgreSQL: the check needs `shard_owners`): appends become
/// [`EventStore::append_fenced`] with `(shard, this node, the epoch it owns the shard at)`, and
/// an append to a shard this node does not own fails at once with [`StoreError::Fenced`]
/// (epoch 0). Reads pass through.
#[derive(Clone)]
pub struct FencedEventStore {
    inner: Arc<dyn EventStore>,
    node_id: Uuid,
    owned: Arc<OwnedShards>,
}

impl FencedEventStore {
    /// Fences `inner`'s appends with the shards `owned` by `node_id`.
    pub fn new(inner: Arc<dyn EventStore>, node_id: Uuid, owned: Arc<OwnedShards>) -> Self {
        Self {
            inner,
            node_id,
            owned,
        }
    }

    fn fence(&self, stream: &StreamId) -> Result<Fence, StoreError> {
        let shard = shard_of(
            stream.aggregate_type(),
            stream.aggregate_id(),
            self.owned.shard_count(),
        );
        match self.owned.epoch(shard) {
            Some(epoch) => Ok(Fence {
                shard,
                owner: self.node_id,
                epoch,
            }),
            None => Err(StoreError::Fenced {
                stream: stream.clone(),
                shard,
                epoch: 0,
            }),
        }
    }
}

/// Counts an append refused because this node did not (or no longer) own the shard.
fn count_fenced(owned: &OwnedShards) {
    owned.count_fenced();
    metrics::counter!("cluster_fenced_appends_total").increment(1);
}

#[async_trait]
impl EventStore for FencedEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt> {
        let fence = self
            .fence(stream)
            .inspect_err(|_| count_fenced(&self.owned))?;
        let appended = self
            .inner
            .append_fenced(stream, expected_version, events, &fence)
            .await;
        if matches!(appended, Err(StoreError::Fenced { .. })) {
            count_fenced(&self.owned);
        }
        appended
    }

    async fn append_fenced(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        fence: &Fence,
    ) -> StoreResult<AppendReceipt> {
        self.inner
            .append_fenced(stream, expected_version, events, fence)
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        query: ReadQuery,
    ) -> StoreResult<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, query).await
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        self.inner.stream_version(stream).await
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        self.inner.read_all(after_position, limit).await
    }

    async fn read_command(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> StoreResult<Vec<RecordedEvent>> {
        self.inner.read_command(stream, command_id).await
    }

    fn crash_safety(&self) -> CrashSafety {
        self.inner.crash_safety()
    }
}
