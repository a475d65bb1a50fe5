//! Snapshot workflows through the test kit, on both backends: the aether workflow (1 000
//! events, a snapshot every 100: an activation after events written elsewhere starts from the
//! snapshot at 900 and replays 100, a read at version 50 uses no snapshot), size-based
//! strategies and their composition, and a strategy written by a user, tested alone and in
//! place.

use crate::common::{Ledger, LedgerCommand, LedgerEvent, LedgerState, Stores, memory, postgres};
use aggregate_actors::strategy::{
    Compose, EveryNEvents, Interval, SizeThreshold, SnapshotContext, SnapshotStrategy,
};
use aggregate_actors::testkit::TestKit;
use aggregate_actors::{AggregateSettings, At, Retention};

/// Keeps every snapshot, so the assertions see each one the strategy asked for.
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

/// Runs `command`, then waits for the snapshot it may have caused: the writer lets a newer
/// request for a stream supersede one still waiting, so without waiting a busy machine could
/// skip a version the strategy chose.
async fn run(kit: &mut TestKit<Ledger>, command: LedgerCommand) {
    kit.when(command).await;
    kit.executor().flush_snapshots().await;
}

fn kit(stores: &Stores, settings: AggregateSettings<Ledger>) -> TestKit<Ledger> {
    TestKit::with_stores(
        std::sync::Arc::clone(&stores.events),
        std::sync::Arc::clone(&stores.snapshots),
        settings,
    )
}

/// The versions of the aggregate's stored snapshots, oldest first.
async fn snapshot_versions(stores: &Stores, kit: &TestKit<Ledger>) -> Vec<u64> {
    kit.executor().flush_snapshots().await;
    stores.snapshot_versions(kit.id()).await
}

async fn aether_workflow(stores: Stores) {
    let mut kit = kit(&stores, settings(EveryNEvents::new(100)));
    for n in 1..=900 {
        run(&mut kit, LedgerCommand::Add(n)).await;
    }
    // The last 100 events come from another writer: no snapshot covers them.
    let rest: Vec<LedgerEvent> = (901..=1_000)
        .map(|amount| LedgerEvent::Added { amount })
        .collect();
    kit.given(rest).await;
    assert_eq!(
        snapshot_versions(&stores, &kit).await,
        (1..=9).map(|k| k * 100).collect::<Vec<_>>(),
        "{}: a snapshot every 100 events",
        stores.name
    );

    let report = kit.reactivate().await;
    kit.then_activated_from(Some(900)).then_replayed(100);
    assert_eq!(report.version, 1_000);
    assert_eq!(kit.state().await.total, (1..=1_000).sum::<i64>());

    let early = kit.reconstruct(At::Version(50)).await;
    assert_eq!(early.snapshot_version(), None, "{}", stores.name);
    assert_eq!(early.events_replayed, 50);
    assert_eq!(early.state.total, (1..=50).sum::<i64>());
    let middle = kit.reconstruct(At::Version(950)).await;
    assert_eq!(
        (middle.snapshot_version(), middle.events_replayed),
        (Some(900), 50)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aether_workflow_in_memory_activates_from_900_replaying_100_and_reads_version_50_without_a_snapshot()
 {
    aether_workflow(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aether_workflow_on_postgres_activates_from_900_replaying_100_and_reads_version_50_without_a_snapshot()
 {
    if let Some(stores) = postgres().await {
        aether_workflow(stores).await;
    }
}

async fn event_bytes_threshold(stores: Stores) {
    // A note event is its text plus about 15 bytes of MessagePack: 1 KiB notes cross a 4 KiB
    // threshold on the fourth, one-byte ones only after hundreds.
    let mut kit = kit(&stores, settings(SizeThreshold::event_bytes(4 * 1024)));
    for _ in 0..4 {
        run(&mut kit, LedgerCommand::Note("x".repeat(1_024))).await;
    }
    assert_eq!(
        snapshot_versions(&stores, &kit).await,
        vec![4],
        "{}",
        stores.name
    );
    for _ in 0..100 {
        run(&mut kit, LedgerCommand::Note("y".into())).await;
    }
    assert_eq!(
        snapshot_versions(&stores, &kit).await,
        vec![4],
        "{}: 100 small events are far from 4 KiB",
        stores.name
    );
    // Replayed events count at activation too: after a restart the next big note crosses it.
    kit.reactivate().await;
    kit.then_activated_from(Some(4)).then_replayed(100);
    for _ in 0..3 {
        run(&mut kit, LedgerCommand::Note("z".repeat(1_024))).await;
    }
    assert_eq!(snapshot_versions(&stores, &kit).await, vec![4, 107]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_threshold_snapshots_after_enough_event_bytes_in_memory() {
    event_bytes_threshold(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_threshold_snapshots_after_enough_event_bytes_on_postgres() {
    if let Some(stores) = postgres().await {
        event_bytes_threshold(stores).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_threshold_snapshots_when_the_encoded_state_has_grown_that_much() {
    let stores = memory();
    // Notes grow the state; amounts barely change its size.
    let mut kit = kit(&stores, settings(SizeThreshold::state_change(2_000)));
    for n in 0..50 {
        run(&mut kit, LedgerCommand::Add(n)).await;
    }
    assert!(snapshot_versions(&stores, &kit).await.is_empty());
    run(&mut kit, LedgerCommand::Note("n".repeat(1_500))).await;
    assert!(snapshot_versions(&stores, &kit).await.is_empty());
    run(&mut kit, LedgerCommand::Note("n".repeat(1_500))).await;
    assert_eq!(snapshot_versions(&stores, &kit).await, vec![52]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composed_strategies_fire_when_either_or_both_say_so() {
    let stores = memory();
    let either = SizeThreshold::event_bytes(4 * 1024).or(EveryNEvents::new(10));
    let mut kit = kit(&stores, settings(either));
    for _ in 0..10 {
        run(&mut kit, LedgerCommand::Add(1)).await;
    }
    for _ in 0..4 {
        run(&mut kit, LedgerCommand::Note("b".repeat(1_024))).await;
    }
    assert_eq!(snapshot_versions(&stores, &kit).await, vec![10, 14]);

    let both = EveryNEvents::new(5).and(Interval::new(std::time::Duration::from_secs(3_600)));
    let mut kit = self::kit(&stores, settings(both));
    for _ in 0..20 {
        run(&mut kit, LedgerCommand::Add(1)).await;
    }
    assert!(
        snapshot_versions(&stores, &kit).await.is_empty(),
        "the interval holds the count back"
    );
}

/// A strategy a user might write: snapshot whenever the total turns negative (an account in
/// overdraft is read often, say).
struct WhenNegative;

impl SnapshotStrategy<Ledger> for WhenNegative {
    fn should_snapshot(&self, context: &SnapshotContext<'_, Ledger>) -> bool {
        let before: i64 = context
            .new_events
            .iter()
            .map(|e| match e {
                LedgerEvent::Added { amount } => *amount,
                _ => 0,
            })
            .sum();
        context.state.total < 0 && context.state.total - before >= 0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_written_strategy_is_tested_on_its_own_and_in_place() {
    // On its own: a context built by hand.
    let negative = LedgerState {
        total: -5,
        ..LedgerState::default()
    };
    let dip = [LedgerEvent::Added { amount: -10 }];
    assert!(WhenNegative.should_snapshot(&SnapshotContext::new(&negative, &dip, 2)));
    let deeper = [LedgerEvent::Added { amount: -1 }];
    assert!(!WhenNegative.should_snapshot(&SnapshotContext::new(&negative, &deeper, 3)));

    // In place: through the executor, read back with the test kit.
    let stores = memory();
    let mut kit = kit(&stores, settings(WhenNegative));
    run(&mut kit, LedgerCommand::Add(5)).await;
    run(&mut kit, LedgerCommand::Add(-10)).await;
    run(&mut kit, LedgerCommand::Add(-1)).await;
    run(&mut kit, LedgerCommand::Add(20)).await;
    run(&mut kit, LedgerCommand::Add(-30)).await;
    assert_eq!(snapshot_versions(&stores, &kit).await, vec![2, 5]);
    kit.reactivate().await;
    kit.then_activated_from(Some(5)).then_replayed(0);
    assert_eq!(
        stores
            .events
            .stream_version(&crate::common::stream(kit.id()))
            .await
            .unwrap(),
        5
    );
}
