//! Shared fixtures: a ledger aggregate whose state depends on event order, stores for each
//! backend, and a snapshot store that fails every write.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aggregate_actors::Aggregate;
use aggregate_actors::Context;
use aggregate_actors::event_stores::testing::{
    Hooked, HookedSnapshots, SnapshotHooks, StoreHooks, TestDatabase, fresh_database,
};
use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, ReadQuery, RecordedEvent,
    SnapshotRecord, SnapshotStore, StoreError, StoreLimits, StoreResult, StreamId, StreamStart,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A ledger: amounts added, notes, and an order-sensitive digest of everything applied, so two
/// states are equal only if the same events were applied in the same order.
pub struct Ledger;

#[derive(Debug, Clone, PartialEq)]
pub enum LedgerCommand {
    Add(i64),
    AddMany(Vec<i64>),
    Note(String),
    /// Always rejected by the domain.
    Overdraw,
    PanicInDecide,
    /// Decides an event whose `apply` panics.
    PanicInApply,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LedgerEvent {
    Added { amount: i64 },
    Noted { text: String },
    Poison,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerState {
    pub total: i64,
    pub applied: u64,
    pub recent: VecDeque<i64>,
    pub notes: Vec<String>,
    pub digest: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("overdraw refused")]
pub struct Refused;

impl Aggregate for Ledger {
    const TYPE: &'static str = "ledger";
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type State = LedgerState;
    type Error = Refused;

    fn decide(
        _: &LedgerState,
        command: &LedgerCommand,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<LedgerEvent>, Refused> {
        match command {
            LedgerCommand::Add(amount) => Ok(vec![LedgerEvent::Added { amount: *amount }]),
            LedgerCommand::AddMany(amounts) => Ok(amounts
                .iter()
                .map(|&amount| LedgerEvent::Added { amount })
                .collect()),
            LedgerCommand::Note(text) => Ok(vec![LedgerEvent::Noted { text: text.clone() }]),
            LedgerCommand::Overdraw => Err(Refused),
            LedgerCommand::PanicInDecide => panic!("decide panicked on purpose"),
            LedgerCommand::PanicInApply => {
                Ok(vec![LedgerEvent::Added { amount: 1 }, LedgerEvent::Poison])
            }
        }
    }

    fn apply(state: &mut LedgerState, event: &LedgerEvent) {
        state.applied += 1;
        let mix = match event {
            LedgerEvent::Added { amount } => {
                state.total += amount;
                state.recent.push_back(*amount);
                if state.recent.len() > 16 {
                    state.recent.pop_front();
                }
                *amount as u64
            }
            LedgerEvent::Noted { text } => {
                state.notes.push(text.clone());
                text.len() as u64 ^ 0xABCD
            }
            LedgerEvent::Poison => panic!("apply panicked on purpose"),
        };
        state.digest = state
            .digest
            .wrapping_mul(0x100_0000_01B3)
            .wrapping_add(mix ^ state.applied);
    }
}

/// The state a sequence of events folds to, computed without any framework code.
pub fn fold(events: &[LedgerEvent]) -> LedgerState {
    let mut state = LedgerState::default();
    for event in events {
        Ledger::apply(&mut state, event);
    }
    state
}

/// The events a command stores when accepted (the model used by the tests).
pub fn expected_events(command: &LedgerCommand) -> Option<Vec<LedgerEvent>> {
    match command {
        LedgerCommand::Overdraw | LedgerCommand::PanicInDecide | LedgerCommand::PanicInApply => {
            None
        }
        other => Ledger::decide(
            &LedgerState::default(),
            other,
            &mut Context::standalone("model"),
        )
        .ok(),
    }
}

/// A pair of stores under test; keeps its PostgreSQL database alive as long as it lives.
pub struct Stores {
    pub events: Arc<dyn EventStore>,
    pub snapshots: Arc<dyn SnapshotStore>,
    pub name: &'static str,
    pool: Option<aggregate_actors::event_stores::postgres::PgPool>,
    _database: Option<TestDatabase>,
}

pub fn memory() -> Stores {
    Stores {
        events: Arc::new(InMemoryEventStore::new()),
        snapshots: Arc::new(InMemorySnapshotStore::new()),
        name: "memory",
        pool: None,
        _database: None,
    }
}

/// Fresh PostgreSQL stores, or None when PostgreSQL tests are skipped (never in CI).
pub async fn postgres() -> Option<Stores> {
    let database = fresh_database().await?;
    let (events, snapshots) = database
        .stores(StoreLimits::default())
        .await
        .expect("PostgreSQL stores");
    Some(Stores {
        pool: Some(events.pool().clone()),
        events: Arc::new(events),
        snapshots: Arc::new(snapshots),
        name: "postgres",
        _database: Some(database),
    })
}

impl Stores {
    /// The versions of the stored snapshots of ledger `id`, oldest first.
    pub async fn snapshot_versions(&self, id: &str) -> Vec<u64> {
        let mut versions: Vec<u64> = self
            .snapshots
            .list(&stream(id), 0, u64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|record| record.version)
            .collect();
        versions.sort_unstable();
        versions
    }

    /// The PostgreSQL pool of these stores (None in memory).
    pub fn pool(&self) -> Option<aggregate_actors::event_stores::postgres::PgPool> {
        self.pool.clone()
    }

    /// The same event store with an empty snapshot store: what a full replay sees.
    pub fn without_snapshots(&self) -> (Arc<dyn EventStore>, Arc<dyn SnapshotStore>) {
        (
            Arc::clone(&self.events),
            Arc::new(InMemorySnapshotStore::new()),
        )
    }

    /// The same event store with a snapshot store that fails every write.
    pub fn with_failing_snapshots(&self) -> (Arc<dyn EventStore>, Arc<dyn SnapshotStore>) {
        (
            Arc::clone(&self.events),
            Arc::new(HookedSnapshots::new(
                Arc::clone(&self.snapshots),
                FailingSnapshotStore,
            )),
        )
    }
}

/// Runs a test body once per backend: `<name>::memory` and `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident => $body:ident;)*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$body($crate::common::memory()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(stores) = $crate::common::postgres().await else { return };
                super::$body(stores).await;
            }
        }
    )*};
}

/// Hooks for a snapshot store whose writes all fail (reads pass through): invariant 4 says
/// commands must not notice.
pub struct FailingSnapshotStore;

fn refused() -> StoreError {
    StoreError::Unavailable {
        message: "snapshot store refuses every write (test)".into(),
        source: None,
    }
}

#[async_trait]
impl SnapshotHooks for FailingSnapshotStore {
    async fn save(&self, _: &Arc<dyn SnapshotStore>, _: SnapshotRecord) -> StoreResult<()> {
        Err(refused())
    }
    async fn save_and_read_back(
        &self,
        _: &Arc<dyn SnapshotStore>,
        _: SnapshotRecord,
    ) -> StoreResult<SnapshotRecord> {
        Err(refused())
    }
    async fn delete(&self, _: &Arc<dyn SnapshotStore>, _: &StreamId, _: u64) -> StoreResult<bool> {
        Err(refused())
    }
    async fn delete_older_than(
        &self,
        _: &Arc<dyn SnapshotStore>,
        _: &StreamId,
        _: u64,
    ) -> StoreResult<u64> {
        Err(refused())
    }
    async fn retain_newest(
        &self,
        _: &Arc<dyn SnapshotStore>,
        _: &StreamId,
        _: usize,
    ) -> StoreResult<u64> {
        Err(refused())
    }
    async fn retain_newest_at_or_below(
        &self,
        _: &Arc<dyn SnapshotStore>,
        _: &StreamId,
        _: u64,
        _: usize,
    ) -> StoreResult<u64> {
        Err(refused())
    }
}

pub fn stream(id: &str) -> StreamId {
    StreamId::new(Ledger::TYPE, id).unwrap()
}

/// Every event of `id` decoded, in version order, checking versions are 1..=n with no gaps.
pub async fn stored_events(store: &dyn EventStore, id: &str) -> Vec<LedgerEvent> {
    use aggregate_actors::event_stores::{ReadQuery, StreamPages};
    let stream = stream(id);
    let mut pages = StreamPages::new(store, &stream, ReadQuery::all().page_size(5_000));
    let mut events = Vec::new();
    let mut expected_version = 1;
    while let Some(page) = pages.next_page().await.unwrap() {
        for event in page {
            assert_eq!(
                event.version, expected_version,
                "versions must be contiguous"
            );
            expected_version += 1;
            events.push(aggregate_actors::codec::decode(&event.payload).unwrap());
        }
    }
    events
}

/// Hooks that count reads of a stream (every way an actor can read one).
#[derive(Default)]
pub struct CountingReads {
    reads: AtomicU64,
}

impl CountingReads {
    pub fn wrap(inner: &Arc<dyn EventStore>) -> Arc<Hooked<Self>> {
        Arc::new(Hooked::new(Arc::clone(inner), Self::default()))
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl StoreHooks for CountingReads {
    async fn read_stream(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        query: ReadQuery,
    ) -> StoreResult<Vec<RecordedEvent>> {
        self.count();
        inner.read_stream(stream, query).await
    }
    async fn stream_version(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
    ) -> StoreResult<u64> {
        self.count();
        inner.stream_version(stream).await
    }
    async fn read_command(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        command_id: uuid::Uuid,
    ) -> StoreResult<Vec<RecordedEvent>> {
        self.count();
        inner.read_command(stream, command_id).await
    }
    async fn read_start(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        snapshots: &dyn SnapshotStore,
        page_size: usize,
    ) -> StoreResult<Option<StreamStart>> {
        self.count();
        inner.read_start(stream, snapshots, page_size).await
    }
}
