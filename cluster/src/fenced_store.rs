//! [`FencedEventStore`]: an event store whose every append carries this node's fencing token
//! for the stream's shard, so a node that lost a shard cannot write to it.

use std::sync::Arc;

use async_trait::async_trait;
use event_stores::{
    AppendReceipt, CrashSafety, DueReminders, EventStore, Fence, NewEvent, ReadQuery,
    RecordedEvent, ReminderChange, SnapshotStore, StoreError, StoreResult, StoredReminder,
    StreamId, StreamStart,
};
use uuid::Uuid;

use crate::owned::OwnedShards;
use crate::shard::shard_of;

/// Wraps an event store (PostgreSQL: the check needs `shard_owners`): appends become
/// [`EventStore::append_fenced`] with `(shard, this node, the epoch it owns the shard at)`, and
/// an append to a shard this node does not own fails at once with [`StoreError::Fenced`]
/// (epoch 0). [`EventStore::append_with_reminders`] is fenced the same way (so reminders record
/// the stream's shard); reads, reminder reads included, pass through.
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

    /// Fenced like [`append`](Self::append) when `fence` is `None` (the usual call): the
    /// stream's shard at the epoch this node owns it, or [`StoreError::Fenced`] (epoch 0) at
    /// once. A fence given by the caller is passed on as it is, like
    /// [`append_fenced`](Self::append_fenced).
    async fn append_with_reminders(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        reminders: Vec<ReminderChange>,
        fence: Option<&Fence>,
    ) -> StoreResult<AppendReceipt> {
        if let Some(fence) = fence {
            return self
                .inner
                .append_with_reminders(stream, expected_version, events, reminders, Some(fence))
                .await;
        }
        let fence = self
            .fence(stream)
            .inspect_err(|_| count_fenced(&self.owned))?;
        let appended = self
            .inner
            .append_with_reminders(stream, expected_version, events, reminders, Some(&fence))
            .await;
        if matches!(appended, Err(StoreError::Fenced { .. })) {
            count_fenced(&self.owned);
        }
        appended
    }

    async fn reminders_of(&self, stream: &StreamId) -> StoreResult<Vec<StoredReminder>> {
        self.inner.reminders_of(stream).await
    }

    async fn due_reminders(&self, query: &DueReminders) -> StoreResult<Vec<StoredReminder>> {
        self.inner.due_reminders(query).await
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

    // Reads pass through unfenced, including the backends' faster forms of the defaults.
    async fn count_after(&self, position: u64) -> StoreResult<u64> {
        self.inner.count_after(position).await
    }

    async fn stream_ids(
        &self,
        aggregate_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.inner.stream_ids(aggregate_type, after, limit).await
    }

    async fn read_start(
        &self,
        stream: &StreamId,
        snapshots: &dyn SnapshotStore,
        page_size: usize,
    ) -> StoreResult<Option<StreamStart>> {
        self.inner.read_start(stream, snapshots, page_size).await
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use event_stores::contract::{fresh_stream, numbered_events, schedule};
    use event_stores::testing::{Hooked, StoreHooks};
    use event_stores::{InMemoryEventStore, ReminderState};

    use super::*;

    /// Hooks for an in-memory store that record the fence of every `append_with_reminders` and
    /// then store the call unfenced, or refuse it as fenced when told to.
    #[derive(Default)]
    struct Recording {
        fences: Mutex<Vec<Option<Fence>>>,
        refuse: bool,
    }

    impl Recording {
        fn store(refuse: bool) -> Arc<Hooked<Self>> {
            let hooks = Self {
                refuse,
                ..Self::default()
            };
            Arc::new(Hooked::new(Arc::new(InMemoryEventStore::new()), hooks))
        }
    }

    #[async_trait]
    impl StoreHooks for Recording {
        async fn append_with_reminders(
            &self,
            inner: &Arc<dyn EventStore>,
            stream: &StreamId,
            expected_version: u64,
            events: Vec<NewEvent>,
            reminders: Vec<ReminderChange>,
            fence: Option<&Fence>,
        ) -> StoreResult<AppendReceipt> {
            self.fences.lock().unwrap().push(fence.copied());
            if let (true, Some(fence)) = (self.refuse, fence) {
                return Err(StoreError::Fenced {
                    stream: stream.clone(),
                    shard: fence.shard,
                    epoch: fence.epoch,
                });
            }
            inner
                .append_with_reminders(stream, expected_version, events, reminders, None)
                .await
        }
    }

    fn fenced_store(
        recording: &Arc<Hooked<Recording>>,
        node: Uuid,
    ) -> (FencedEventStore, Arc<OwnedShards>) {
        let owned = Arc::new(OwnedShards::new(16));
        let inner: Arc<dyn EventStore> = Arc::clone(recording) as Arc<dyn EventStore>;
        (
            FencedEventStore::new(inner, node, Arc::clone(&owned)),
            owned,
        )
    }

    /// A call on an owned shard carries (shard, this node, its epoch) to the inner store; on a
    /// shard not owned it is fenced at once (epoch 0) without reaching it; a refusal by the inner
    /// store is counted like an append's. Reminder reads pass through.
    #[tokio::test]
    async fn append_with_reminders_is_fenced_like_an_append_and_reads_pass_through() {
        let recording = Recording::store(false);
        let node = Uuid::now_v7();
        let (store, owned) = fenced_store(&recording, node);
        let stream = fresh_stream("fenced-reminders");
        let shard = shard_of(stream.aggregate_type(), stream.aggregate_id(), 16);
        let due = event_stores::contract::now_micros();

        let refused = store
            .append_with_reminders(
                &stream,
                0,
                numbered_events(0, 1),
                vec![schedule("r", due, None, b"r")],
                None,
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { epoch: 0, shard: s, .. }) if s == shard),
            "{refused:?}"
        );
        assert!(recording.fences.lock().unwrap().is_empty());
        assert_eq!(owned.fenced_appends(), 1);

        owned.grant(shard, 9);
        store
            .append_with_reminders(
                &stream,
                0,
                numbered_events(0, 1),
                vec![schedule("r", due, None, b"r")],
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            *recording.fences.lock().unwrap(),
            [Some(Fence {
                shard,
                owner: node,
                epoch: 9
            })]
        );
        let stored = store.reminders_of(&stream).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].state, ReminderState::Scheduled);
        let due_now = store
            .due_reminders(&DueReminders {
                shards: None,
                due_by: due,
                limit: 10,
                skip: Vec::new(),
            })
            .await
            .unwrap();
        assert_eq!(due_now, stored);

        // A fence given by the caller goes through as given.
        let given = Fence {
            shard: 3,
            owner: Uuid::now_v7(),
            epoch: 77,
        };
        store
            .append_with_reminders(&stream, 1, Vec::new(), Vec::new(), Some(&given))
            .await
            .unwrap();
        assert_eq!(recording.fences.lock().unwrap().last(), Some(&Some(given)));
        assert_eq!(owned.fenced_appends(), 1);

        let refusing = Recording::store(true);
        let (store, owned) = fenced_store(&refusing, node);
        owned.grant(shard, 2);
        let refused = store
            .append_with_reminders(&stream, 0, Vec::new(), Vec::new(), None)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { epoch: 2, .. })),
            "{refused:?}"
        );
        assert_eq!(
            owned.fenced_appends(),
            1,
            "a refusal by the store is counted"
        );
    }
}
