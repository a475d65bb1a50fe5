//! Snapshot strategies, retention and the snapshot writer seen through a real executor: which
//! versions get a snapshot (read back with the snapshot store's `list` and the executor's
//! stats), that retention by age deletes old snapshots, that the writer never writes a version
//! older than one it wrote and lets newer requests supersede waiting ones, and that
//! `max_concurrent_activations` bounds concurrent activations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Ledger, LedgerCommand, LedgerEvent, stream};
use aggregate_actors::event_stores::testing::{Hooked, HookedSnapshots, SnapshotHooks, StoreHooks};
use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, ReadQuery, RecordedEvent,
    SnapshotRecord, SnapshotStore, StoreResult, StreamId,
};
use aggregate_actors::strategy::{
    Bounded, EveryNEvents, Hybrid, Interval, Predicate, ReplayCost, SnapshotStrategy,
};
use aggregate_actors::{AggregateSettings, Executor, Retention, RuntimeConfig};
use async_trait::async_trait;

/// Keeps every snapshot, so `list` shows every version the strategy chose.
const KEEP_ALL: Retention = Retention {
    keep_newest: 1_000,
    max_age: None,
};

fn settings(strategy: impl SnapshotStrategy<Ledger>) -> AggregateSettings<Ledger> {
    AggregateSettings::new()
        .strategy(strategy)
        .snapshot_on_passivation(false)
        .retention(KEEP_ALL)
}

fn executor_on(
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    settings: AggregateSettings<Ledger>,
) -> Executor {
    Executor::builder(events, snapshots)
        .register::<Ledger>(settings)
        .build()
        .unwrap()
}

fn in_memory(settings: AggregateSettings<Ledger>) -> Executor {
    executor_on(
        Arc::new(InMemoryEventStore::new()),
        Arc::new(InMemorySnapshotStore::new()),
        settings,
    )
}

/// Runs `command` on `id` and waits until any snapshot it caused is written, so the snapshot
/// store shows exactly the versions the strategy chose (no request is coalesced away).
async fn run(executor: &Executor, id: &str, command: LedgerCommand) -> u64 {
    let committed = executor.execute::<Ledger>(id, command).await.unwrap();
    executor.flush_snapshots().await;
    committed.version
}

/// The versions of the snapshots stored for `id`, oldest first (`list` gives newest first).
async fn snapshot_versions(executor: &Executor, id: &str) -> Vec<u64> {
    let mut versions: Vec<u64> = executor
        .snapshot_store()
        .list(&stream(id), 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|record| record.version)
        .collect();
    versions.sort_unstable();
    versions
}

fn snapshots_taken(executor: &Executor) -> u64 {
    executor
        .stats_of::<Ledger>()
        .unwrap()
        .aggregate
        .snapshots_taken
}

/// The interval of the time-based strategies and the age bound of retention below: the steps
/// that must fall within one (a few commands, normally milliseconds) still do when the test
/// process stalls for several hundred milliseconds on a loaded machine.
const WINDOW: Duration = Duration::from_secs(2);

/// Sleeps past [`WINDOW`], counted from before the sleep: whatever happened before is older.
async fn sleep_past_the_window() {
    tokio::time::sleep(WINDOW + Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_snapshots_the_first_command_after_the_interval_has_passed_and_not_before() {
    let executor = in_memory(settings(Interval::new(WINDOW)));
    // Version 1 activates the actor: the interval counts from the activation.
    assert_eq!(run(&executor, "iv", LedgerCommand::Add(1)).await, 1);
    assert_eq!(run(&executor, "iv", LedgerCommand::Add(1)).await, 2);
    assert_eq!(snapshot_versions(&executor, "iv").await, Vec::<u64>::new());
    sleep_past_the_window().await;
    assert_eq!(run(&executor, "iv", LedgerCommand::Add(1)).await, 3);
    assert_eq!(run(&executor, "iv", LedgerCommand::Add(1)).await, 4);
    assert_eq!(snapshot_versions(&executor, "iv").await, vec![3]);
    sleep_past_the_window().await;
    assert_eq!(run(&executor, "iv", LedgerCommand::Add(1)).await, 5);
    assert_eq!(snapshot_versions(&executor, "iv").await, vec![3, 5]);
    assert_eq!(snapshots_taken(&executor), 2);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_snapshots_after_n_events_or_after_the_interval_whichever_comes_first() {
    let executor = in_memory(settings(Hybrid::new(5, WINDOW)));
    // Count: five quick events.
    for _ in 0..4 {
        run(&executor, "hy", LedgerCommand::Add(1)).await;
    }
    assert_eq!(snapshot_versions(&executor, "hy").await, Vec::<u64>::new());
    assert_eq!(run(&executor, "hy", LedgerCommand::Add(1)).await, 5);
    assert_eq!(snapshot_versions(&executor, "hy").await, vec![5]);
    // Time: two events, far fewer than five, but the interval has passed.
    assert_eq!(run(&executor, "hy", LedgerCommand::Add(1)).await, 6);
    sleep_past_the_window().await;
    assert_eq!(run(&executor, "hy", LedgerCommand::Add(1)).await, 7);
    assert_eq!(snapshot_versions(&executor, "hy").await, vec![5, 7]);
    // Count again, one command of five events.
    assert_eq!(
        run(&executor, "hy", LedgerCommand::AddMany(vec![1; 5])).await,
        12
    );
    assert_eq!(snapshot_versions(&executor, "hy").await, vec![5, 7, 12]);
    assert_eq!(snapshots_taken(&executor), 3);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_snapshots_at_multiples_of_every_but_never_within_min_gap_and_always_at_max_gap() {
    let executor = in_memory(settings(Bounded::new(10, 5, 8)));
    for _ in 0..40 {
        run(&executor, "bd", LedgerCommand::Add(1)).await;
    }
    // 8: max gap. 10: a multiple, but only 2 after 8 (< min gap). 16: max gap. 20: 4 after
    // 16 (< min gap). 24: max gap. 30: a multiple, 6 after 24. 38: max gap. 40: 2 after 38.
    assert_eq!(
        snapshot_versions(&executor, "bd").await,
        vec![8, 16, 24, 30, 38]
    );
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_snapshots_when_a_multi_event_command_jumps_over_a_multiple() {
    let executor = in_memory(settings(Bounded::new(10, 2, 100)));
    assert_eq!(
        run(&executor, "bj", LedgerCommand::AddMany(vec![1; 8])).await,
        8
    );
    assert_eq!(snapshot_versions(&executor, "bj").await, Vec::<u64>::new());
    // 9..=13 jumps over 10.
    assert_eq!(
        run(&executor, "bj", LedgerCommand::AddMany(vec![1; 5])).await,
        13
    );
    assert_eq!(snapshot_versions(&executor, "bj").await, vec![13]);
    // 14..=19: no multiple; 20..=21 crosses 20, 8 events after 13.
    run(&executor, "bj", LedgerCommand::AddMany(vec![1; 6])).await;
    assert_eq!(snapshot_versions(&executor, "bj").await, vec![13]);
    assert_eq!(
        run(&executor, "bj", LedgerCommand::AddMany(vec![1; 2])).await,
        21
    );
    assert_eq!(snapshot_versions(&executor, "bj").await, vec![13, 21]);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicate_snapshots_at_the_commands_version_when_any_new_event_matches() {
    // Notes are milestones; so is every event at a version divisible by 4.
    let predicate = Predicate::<Ledger>::new(|_, event, version| {
        matches!(event, LedgerEvent::Noted { .. }) || version % 4 == 0
    });
    let executor = in_memory(settings(predicate));
    run(&executor, "pr", LedgerCommand::Add(1)).await; // 1
    run(&executor, "pr", LedgerCommand::Add(1)).await; // 2
    assert_eq!(snapshot_versions(&executor, "pr").await, Vec::<u64>::new());
    assert_eq!(
        run(&executor, "pr", LedgerCommand::Note("x".into())).await,
        3
    );
    assert_eq!(snapshot_versions(&executor, "pr").await, vec![3]);
    // 4..=6 contains version 4: the snapshot is of the state after the whole command.
    assert_eq!(
        run(&executor, "pr", LedgerCommand::AddMany(vec![1, 1, 1])).await,
        6
    );
    assert_eq!(snapshot_versions(&executor, "pr").await, vec![3, 6]);
    assert_eq!(run(&executor, "pr", LedgerCommand::Add(1)).await, 7);
    assert_eq!(snapshot_versions(&executor, "pr").await, vec![3, 6]);
    let view = executor
        .reconstruct::<Ledger>("pr", aggregate_actors::At::Version(6))
        .await
        .unwrap();
    assert_eq!(view.from_snapshot.map(|s| s.version), Some(6));
    assert_eq!(view.state.total, 5);
    assert_eq!(snapshots_taken(&executor), 2);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_cost_snapshots_once_after_an_expensive_activation_and_never_after_cheap_ones() {
    let events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(InMemorySnapshotStore::new());
    let executor = executor_on(
        Arc::clone(&events),
        Arc::clone(&snapshots),
        settings(ReplayCost::new(5, Duration::from_secs(60))),
    );
    // A new aggregate activates for free: ten commands, no snapshot.
    for _ in 0..10 {
        run(&executor, "rc", LedgerCommand::Add(1)).await;
    }
    assert_eq!(snapshot_versions(&executor, "rc").await, Vec::<u64>::new());
    // Re-activation replays 10 events (> 5): the first command afterwards snapshots, once.
    executor.passivate::<Ledger>("rc").await.unwrap();
    assert_eq!(run(&executor, "rc", LedgerCommand::Add(1)).await, 11);
    assert_eq!(
        executor
            .stats_of::<Ledger>()
            .unwrap()
            .aggregate
            .last_activation
            .unwrap()
            .events_replayed,
        10
    );
    assert_eq!(run(&executor, "rc", LedgerCommand::Add(1)).await, 12);
    assert_eq!(snapshot_versions(&executor, "rc").await, vec![11]);
    // Re-activation from that snapshot replays 1 event: cheap, no snapshot.
    executor.passivate::<Ledger>("rc").await.unwrap();
    assert_eq!(run(&executor, "rc", LedgerCommand::Add(1)).await, 13);
    let last = executor
        .stats_of::<Ledger>()
        .unwrap()
        .aggregate
        .last_activation
        .unwrap();
    assert_eq!(
        (last.snapshot_version(), last.events_replayed),
        (Some(11), 1)
    );
    assert_eq!(snapshot_versions(&executor, "rc").await, vec![11]);
    assert_eq!(snapshots_taken(&executor), 1);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_deletes_snapshots_older_than_max_age_but_keeps_the_newest() {
    let executor = in_memory(
        AggregateSettings::new()
            .strategy(EveryNEvents::new(1))
            .snapshot_on_passivation(false)
            .retention(Retention {
                keep_newest: 100,
                max_age: Some(WINDOW),
            }),
    );
    for _ in 0..3 {
        run(&executor, "ra", LedgerCommand::Add(1)).await;
    }
    assert_eq!(snapshot_versions(&executor, "ra").await, vec![1, 2, 3]);
    sleep_past_the_window().await;
    // The next write applies retention: 1..=3 are older than max age.
    run(&executor, "ra", LedgerCommand::Add(1)).await;
    assert_eq!(snapshot_versions(&executor, "ra").await, vec![4]);
    run(&executor, "ra", LedgerCommand::Add(1)).await;
    assert_eq!(snapshot_versions(&executor, "ra").await, vec![4, 5]);
    // Nothing new for a while: the newest snapshot survives even when older than max age.
    sleep_past_the_window().await;
    executor
        .execute::<Ledger>("ra", LedgerCommand::Overdraw)
        .await
        .unwrap_err();
    assert_eq!(executor.snapshot_now::<Ledger>("ra").await.unwrap(), 5);
    assert_eq!(snapshot_versions(&executor, "ra").await, vec![5]);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_only_the_newest_keep_newest_snapshots() {
    let executor = in_memory(
        AggregateSettings::new()
            .strategy(EveryNEvents::new(1))
            .snapshot_on_passivation(false)
            .retention(Retention {
                keep_newest: 2,
                max_age: None,
            }),
    );
    for _ in 0..5 {
        run(&executor, "rk", LedgerCommand::Add(1)).await;
    }
    assert_eq!(snapshot_versions(&executor, "rk").await, vec![4, 5]);
    executor.shutdown().await;
}

/// Hooks for a snapshot store whose saves take `delay` and that records the order of saved
/// versions (both ways of saving: the snapshot writer saves with a read-back).
struct SlowSnapshots {
    delay: Duration,
    saved: Mutex<Vec<u64>>,
}

impl SlowSnapshots {
    async fn before_save(&self, record: &SnapshotRecord) {
        tokio::time::sleep(self.delay).await;
        self.saved.lock().unwrap().push(record.version);
    }
}

#[async_trait]
impl SnapshotHooks for SlowSnapshots {
    async fn save(
        &self,
        inner: &Arc<dyn SnapshotStore>,
        record: SnapshotRecord,
    ) -> StoreResult<()> {
        self.before_save(&record).await;
        inner.save(record).await
    }
    async fn save_and_read_back(
        &self,
        inner: &Arc<dyn SnapshotStore>,
        record: SnapshotRecord,
    ) -> StoreResult<SnapshotRecord> {
        self.before_save(&record).await;
        inner.save_and_read_back(record).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_snapshot_store_gets_versions_in_increasing_order_and_newer_requests_supersede_waiting_ones()
 {
    let slow = Arc::new(HookedSnapshots::new(
        Arc::new(InMemorySnapshotStore::new()),
        SlowSnapshots {
            delay: Duration::from_millis(100),
            saved: Mutex::new(Vec::new()),
        },
    ));
    let executor = executor_on(
        Arc::new(InMemoryEventStore::new()),
        Arc::clone(&slow) as Arc<dyn SnapshotStore>,
        settings(EveryNEvents::new(1)),
    );
    // Every command asks for a snapshot, far faster than the store saves one.
    for _ in 0..30 {
        executor
            .execute::<Ledger>("sw", LedgerCommand::Add(1))
            .await
            .unwrap();
    }
    executor.flush_snapshots().await;
    let saved = slow.saved.lock().unwrap().clone();
    assert!(
        saved.windows(2).all(|pair| pair[0] < pair[1]),
        "versions written go strictly forward: {saved:?}"
    );
    assert_eq!(saved.last(), Some(&30), "the newest state is written");
    assert!(
        saved.len() < 30,
        "waiting requests were replaced by newer ones: {saved:?}"
    );
    let stats = executor.stats_of::<Ledger>().unwrap().aggregate;
    assert!(stats.snapshots_superseded > 0, "{stats:?}");
    assert_eq!(stats.snapshots_taken, saved.len() as u64);
    assert_eq!(
        stats.snapshots_taken + stats.snapshots_superseded,
        30,
        "every request was written or superseded"
    );
    assert_eq!(snapshot_versions(&executor, "sw").await, saved);
    executor.shutdown().await;
}

/// Hooks for an event store whose reads of a stream take `delay`, counting how many run at once.
struct SlowReads {
    delay: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
    reads: AtomicU64,
}

#[async_trait]
impl StoreHooks for SlowReads {
    async fn read_stream(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        query: ReadQuery,
    ) -> StoreResult<Vec<RecordedEvent>> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let result = inner.read_stream(stream, query).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_activations_bounds_how_many_activations_read_the_store_at_once() {
    const LIMIT: usize = 3;
    const IDS: usize = 24;
    let slow = Arc::new(Hooked::new(
        Arc::new(InMemoryEventStore::new()),
        SlowReads {
            delay: Duration::from_millis(40),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
        },
    ));
    let runtime = RuntimeConfig {
        max_concurrent_activations: LIMIT,
        ..RuntimeConfig::default()
    };
    let executor = executor_on(
        Arc::clone(&slow) as Arc<dyn EventStore>,
        Arc::new(InMemorySnapshotStore::new()),
        AggregateSettings::new()
            .snapshot_on_passivation(false)
            .runtime(runtime),
    );
    let tasks: Vec<_> = (0..IDS)
        .map(|i| {
            let executor = executor.clone();
            tokio::spawn(async move {
                executor
                    .execute::<Ledger>(&format!("ca-{i}"), LedgerCommand::Add(1))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().version, 1);
    }
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert_eq!(stats.runtime.activations, IDS as u64);
    assert!(slow.reads.load(Ordering::SeqCst) >= IDS as u64);
    let max = slow.max_running.load(Ordering::SeqCst);
    assert!(
        max <= LIMIT,
        "{max} activations read at once, limit {LIMIT}"
    );
    assert_eq!(
        max, LIMIT,
        "{IDS} cold ids at once fill every activation slot"
    );
    executor.shutdown().await;
}
