//! Command semantics: invariants 2 (acknowledged = durable; failed = nothing stored), 3 (one
//! command at a time, conflicts with other writers retried), 5 (retention keeps the newest)
//! and 6 (bad input gets a typed error and stores nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::common::{Ledger, LedgerCommand, Stores, fold, stored_events, stream};
use aggregate_actors::Context;
use aggregate_actors::event_stores::{EventStore, InvalidInput, SnapshotStore};
use aggregate_actors::strategy::{EveryNEvents, Never};
use aggregate_actors::{
    Aggregate, AggregateSettings, CommandError, Executor, ExecutorError, Retention,
};

fn executor_with(
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    settings: AggregateSettings<Ledger>,
) -> Executor {
    Executor::builder(events, snapshots)
        .register::<Ledger>(settings)
        .build()
        .unwrap()
}

fn executor(stores: &Stores) -> Executor {
    executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        AggregateSettings::new(),
    )
}

async fn a_rejected_command_stores_nothing_and_leaves_state_unchanged(stores: Stores) {
    let executor = executor(&stores);
    executor
        .execute::<Ledger>("r", LedgerCommand::Add(5))
        .await
        .unwrap();
    let refused = executor
        .execute::<Ledger>("r", LedgerCommand::Overdraw)
        .await;
    assert!(matches!(
        refused,
        Err(CommandError::Rejected(crate::common::Refused))
    ));
    assert_eq!(stored_events(&*stores.events, "r").await.len(), 1);
    let view = executor.state::<Ledger>("r").await.unwrap();
    assert_eq!((view.version, view.state.total), (1, 5));
    assert_eq!(
        executor
            .stats_of::<Ledger>()
            .unwrap()
            .aggregate
            .commands_rejected,
        1
    );
}

async fn a_panic_in_decide_stops_only_that_actor_and_stores_nothing(stores: Stores) {
    let executor = executor(&stores);
    executor
        .execute::<Ledger>("p", LedgerCommand::Add(1))
        .await
        .unwrap();
    let crashed = executor
        .execute::<Ledger>("p", LedgerCommand::PanicInDecide)
        .await;
    assert!(
        matches!(
            crashed,
            Err(CommandError::NotStored(ExecutorError::ActorStopped { .. }))
        ),
        "{crashed:?}"
    );
    let next = executor
        .execute::<Ledger>("p", LedgerCommand::Add(2))
        .await
        .unwrap();
    assert_eq!(next.version, 2, "re-activated from the stored events");
    assert_eq!(fold(&stored_events(&*stores.events, "p").await).total, 3);
    let runtime = executor.stats_of::<Ledger>().unwrap().runtime;
    assert_eq!(runtime.crashes, 1);
    assert_eq!(runtime.activations, 2);
}

async fn a_panic_in_apply_stores_nothing_and_the_actor_recovers_from_the_store(stores: Stores) {
    let executor = executor(&stores);
    executor
        .execute::<Ledger>("a", LedgerCommand::Add(10))
        .await
        .unwrap();
    let crashed = executor
        .execute::<Ledger>("a", LedgerCommand::PanicInApply)
        .await;
    assert!(
        matches!(
            crashed,
            Err(CommandError::NotStored(ExecutorError::ActorStopped { .. }))
        ),
        "{crashed:?}"
    );
    assert_eq!(
        stored_events(&*stores.events, "a").await.len(),
        1,
        "neither event of the crashed command is stored"
    );
    let view = executor.state::<Ledger>("a").await.unwrap();
    assert_eq!((view.version, view.state.total), (1, 10));
}

async fn panics_under_concurrent_load_leave_other_aggregates_untouched(stores: Stores) {
    let executor = executor(&stores);
    let mut tasks = Vec::new();
    for id in 0..20 {
        let executor = executor.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("load-{id}");
            let mut acknowledged = 0;
            for i in 0..25 {
                let command = if id.ends_with('3') && i % 5 == 0 {
                    LedgerCommand::PanicInDecide
                } else {
                    LedgerCommand::Add(i)
                };
                match executor.execute::<Ledger>(&id, command).await {
                    Ok(_) => acknowledged += 1,
                    Err(CommandError::NotStored(ExecutorError::ActorStopped { .. })) => {
                        assert!(id.ends_with('3'))
                    }
                    Err(other) => panic!("{id}: {other}"),
                }
            }
            (id, acknowledged)
        }));
    }
    for task in tasks {
        let (id, acknowledged) = task.await.unwrap();
        let stored = stored_events(&*stores.events, &id).await;
        assert_eq!(stored.len(), acknowledged, "{id}: acknowledged == stored");
        let expected = if id.ends_with('3') { 20 } else { 25 };
        assert_eq!(acknowledged, expected, "{id}");
    }
}

async fn two_executors_writing_one_aggregate_retry_conflicts_and_lose_nothing(stores: Stores) {
    let settings = || {
        AggregateSettings::<Ledger>::new()
            .max_conflict_retries(1_000)
            .strategy(EveryNEvents::new(7))
    };
    let first = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        settings(),
    );
    let second = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        settings(),
    );
    let mut tasks = Vec::new();
    for (n, executor) in [first.clone(), second.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..150 {
                executor
                    .execute::<Ledger>("shared", LedgerCommand::Add(n as i64 * 1_000 + i))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stored = stored_events(&*stores.events, "shared").await;
    assert_eq!(stored.len(), 300);
    let conflicts = first.stats_of::<Ledger>().unwrap().aggregate.conflicts
        + second.stats_of::<Ledger>().unwrap().aggregate.conflicts;
    eprintln!("[{}] conflicts retried: {conflicts}", stores.name);
    for executor in [&first, &second] {
        executor.passivate::<Ledger>("shared").await.unwrap();
        let view = executor.state::<Ledger>("shared").await.unwrap();
        assert_eq!(view.state, fold(&stored));
        assert_eq!(view.version, 300);
    }
}

async fn exhausted_conflict_retries_report_a_conflict_and_store_nothing(stores: Stores) {
    let settings = || AggregateSettings::<Ledger>::new().max_conflict_retries(0);
    let first = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        settings(),
    );
    let second = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        settings(),
    );
    first
        .execute::<Ledger>("c", LedgerCommand::Add(1))
        .await
        .unwrap();
    // `second` activates at version 1, then `first` moves on, so `second` is behind.
    second.state::<Ledger>("c").await.unwrap();
    first
        .execute::<Ledger>("c", LedgerCommand::Add(2))
        .await
        .unwrap();
    let lost = second.execute::<Ledger>("c", LedgerCommand::Add(3)).await;
    assert!(
        matches!(
            lost,
            Err(CommandError::NotStored(ExecutorError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }))
        ),
        "{lost:?}"
    );
    assert_eq!(stored_events(&*stores.events, "c").await.len(), 2);
    // The losing actor caught up: the next command succeeds on fresh state.
    let next = second
        .execute::<Ledger>("c", LedgerCommand::Add(4))
        .await
        .unwrap();
    assert_eq!(next.version, 3);
}

async fn bad_input_gets_a_typed_error_and_stores_nothing(stores: Stores) {
    let executor = executor(&stores);
    let empty = executor.execute::<Ledger>("", LedgerCommand::Add(1)).await;
    assert!(matches!(
        empty,
        Err(CommandError::NotStored(ExecutorError::InvalidInput(
            InvalidInput::EmptyId { .. }
        )))
    ));
    let huge_id = "x".repeat(10_000);
    let long = executor
        .execute::<Ledger>(&huge_id, LedgerCommand::Add(1))
        .await;
    assert!(matches!(
        long,
        Err(CommandError::NotStored(ExecutorError::InvalidInput(
            InvalidInput::IdTooLong { .. }
        )))
    ));
    let oversized = executor
        .execute::<Ledger>("big", LedgerCommand::Note("x".repeat(2 * 1024 * 1024)))
        .await;
    assert!(
        matches!(
            oversized,
            Err(CommandError::NotStored(ExecutorError::InvalidInput(
                InvalidInput::PayloadTooLarge { .. }
            )))
        ),
        "{oversized:?}"
    );
    assert!(stored_events(&*stores.events, "big").await.is_empty());
    // The actor is still usable: the failed append left it consistent with the store.
    assert_eq!(
        executor
            .execute::<Ledger>("big", LedgerCommand::Add(1))
            .await
            .unwrap()
            .version,
        1
    );

    struct Unregistered;
    impl Aggregate for Unregistered {
        const TYPE: &'static str = "unregistered";
        type Command = ();
        type Event = ();
        type State = ();
        type Error = std::convert::Infallible;
        fn decide(
            _: &(),
            _: &(),
            _ctx: &mut Context<'_, Self>,
        ) -> Result<Vec<()>, std::convert::Infallible> {
            Ok(vec![()])
        }
        fn apply(_: &mut (), _: &()) {}
    }
    let unknown = executor.execute::<Unregistered>("u", ()).await;
    assert!(matches!(
        unknown,
        Err(CommandError::NotStored(
            ExecutorError::UnknownAggregateType("unregistered")
        ))
    ));
}

/// The activation's one read is what finds out that an id has no events: no separate existence
/// check; the actor it took is passivated before the answer, so nothing stays live.
async fn state_of_an_unknown_id_is_not_found_and_leaves_nothing_live(stores: Stores) {
    let executor = executor(&stores);
    let missing = executor.state::<Ledger>("nobody").await;
    assert!(
        matches!(missing, Err(ExecutorError::NotFound { .. })),
        "{missing:?}"
    );
    assert!(!executor.is_live::<Ledger>("nobody"));
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert_eq!(stats.runtime.activations, 1);
    assert_eq!(stats.runtime.live, 0);
    assert!(matches!(
        executor.snapshot_now::<Ledger>("nobody").await,
        Err(ExecutorError::NotFound { .. })
    ));
    assert!(!executor.is_live::<Ledger>("nobody"));
    assert_eq!(
        stores
            .events
            .stream_version(&stream("nobody"))
            .await
            .unwrap(),
        0
    );
}

async fn retention_keeps_the_newest_n_snapshots(stores: Stores) {
    let settings = AggregateSettings::new()
        .strategy(EveryNEvents::new(1))
        .retention(Retention {
            keep_newest: 3,
            max_age: None,
        });
    let executor = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        settings,
    );
    for i in 0..20 {
        executor
            .execute::<Ledger>("kept", LedgerCommand::Add(i))
            .await
            .unwrap();
        executor.flush_snapshots().await;
    }
    let stats = stores.snapshots.stats(&stream("kept")).await.unwrap();
    assert_eq!(stats.count, 3);
    assert_eq!(stats.newest_version, Some(20));
    let versions: Vec<u64> = stores
        .snapshots
        .list(&stream("kept"), 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, vec![20, 19, 18]);
}

async fn snapshots_are_taken_on_demand_and_on_passivation(stores: Stores) {
    let settings = AggregateSettings::new()
        .strategy(Never)
        .snapshot_on_passivation(true);
    let executor = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        settings,
    );
    for i in 0..5 {
        executor
            .execute::<Ledger>("s", LedgerCommand::Add(i))
            .await
            .unwrap();
    }
    assert_eq!(executor.snapshot_now::<Ledger>("s").await.unwrap(), 5);
    assert_eq!(
        stores
            .snapshots
            .load_latest(&stream("s"))
            .await
            .unwrap()
            .unwrap()
            .version,
        5
    );
    executor
        .execute::<Ledger>("s", LedgerCommand::Add(9))
        .await
        .unwrap();
    assert!(executor.passivate::<Ledger>("s").await.unwrap());
    executor.flush_snapshots().await;
    assert_eq!(
        stores
            .snapshots
            .load_latest(&stream("s"))
            .await
            .unwrap()
            .unwrap()
            .version,
        6
    );
    let view = executor.state::<Ledger>("s").await.unwrap();
    assert_eq!(view.activation.snapshot_version(), Some(6));
    assert_eq!(view.activation.events_replayed, 0);
}

on_both_backends! {
    rejected_command_stores_nothing_and_leaves_state_unchanged => a_rejected_command_stores_nothing_and_leaves_state_unchanged;
    panic_in_decide_stops_only_that_actor_and_stores_nothing => a_panic_in_decide_stops_only_that_actor_and_stores_nothing;
    panic_in_apply_stores_nothing_and_actor_recovers_from_the_store => a_panic_in_apply_stores_nothing_and_the_actor_recovers_from_the_store;
    panics_under_concurrent_load_leave_other_aggregates_untouched => panics_under_concurrent_load_leave_other_aggregates_untouched;
    two_executors_on_one_aggregate_retry_conflicts_and_lose_nothing => two_executors_writing_one_aggregate_retry_conflicts_and_lose_nothing;
    exhausted_conflict_retries_report_a_conflict_and_store_nothing => exhausted_conflict_retries_report_a_conflict_and_store_nothing;
    bad_input_gets_a_typed_error_and_stores_nothing => bad_input_gets_a_typed_error_and_stores_nothing;
    state_of_an_unknown_id_is_not_found_and_leaves_nothing_live => state_of_an_unknown_id_is_not_found_and_leaves_nothing_live;
    retention_keeps_the_newest_n_snapshots => retention_keeps_the_newest_n_snapshots;
    snapshots_are_taken_on_demand_and_on_passivation => snapshots_are_taken_on_demand_and_on_passivation;
}
