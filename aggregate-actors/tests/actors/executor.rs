//! The executor over the virtual-actor runtime: one activation per id under concurrency,
//! ordered versions, passivation and re-activation from snapshot + tail, the LRU cap, graceful
//! shutdown, and reconstruction ("time travel").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{Ledger, LedgerCommand, Stores, fold, stored_events};
use aggregate_actors::event_stores::testing::{Hooked, StoreHooks};
use aggregate_actors::event_stores::{AppendReceipt, EventStore, NewEvent, StoreResult, StreamId};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{
    AggregateSettings, At, CommandError, Executor, ExecutorError, ResidentConfig, Retention,
    RuntimeConfig,
};

fn executor(stores: &Stores, settings: AggregateSettings<Ledger>) -> Executor {
    Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Ledger>(settings)
        .build()
        .unwrap()
}

async fn a_thousand_concurrent_commands_to_one_id_get_versions_1_to_1000(stores: Stores) {
    let executor = executor(&stores, AggregateSettings::new());
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let executor = executor.clone();
            tokio::spawn(async move {
                executor
                    .execute::<Ledger>("hot", LedgerCommand::Add(i))
                    .await
                    .unwrap()
                    .version
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    for task in tasks {
        assert!(
            versions.insert(task.await.unwrap()),
            "each version acknowledged once"
        );
    }
    assert_eq!(versions, (1..=1_000).collect::<BTreeSet<u64>>());
    let stored = stored_events(&*stores.events, "hot").await;
    assert_eq!(stored.len(), 1_000);
    assert_eq!(fold(&stored).total, (0..1_000).sum::<i64>());
    assert_eq!(
        executor.stats_of::<Ledger>().unwrap().runtime.activations,
        1
    );
}

async fn ten_thousand_ids_under_concurrent_traffic_activate_exactly_once_each(stores: Stores) {
    let executor = executor(&stores, AggregateSettings::new());
    let ids = 10_000;
    let tasks: Vec<_> = (0..ids)
        .flat_map(|id| (0..3).map(move |k| (id, k)))
        .map(|(id, k)| {
            let executor = executor.clone();
            tokio::spawn(async move {
                executor
                    .execute::<Ledger>(&format!("id-{id}"), LedgerCommand::Add(k + 1))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert_eq!(
        stats.runtime.activations, ids as u64,
        "exactly one activation per id"
    );
    assert_eq!(stats.aggregate.activations, ids as u64);
    for id in (0..ids).step_by(97) {
        let view = executor.state::<Ledger>(&format!("id-{id}")).await.unwrap();
        assert_eq!((view.version, view.state.total), (3, 6));
    }
    executor.shutdown().await;
}

async fn passivation_then_the_next_command_reactivates_from_snapshot_plus_tail(stores: Stores) {
    let settings = AggregateSettings::new()
        .strategy(EveryNEvents::new(10))
        .snapshot_on_passivation(false);
    let executor = executor(&stores, settings);
    for i in 0..25 {
        executor
            .execute::<Ledger>("pass", LedgerCommand::Add(i))
            .await
            .unwrap();
    }
    executor.flush_snapshots().await;
    assert!(executor.passivate::<Ledger>("pass").await.unwrap());
    assert!(!executor.is_live::<Ledger>("pass"));
    executor
        .execute::<Ledger>("pass", LedgerCommand::Add(100))
        .await
        .unwrap();
    let view = executor.state::<Ledger>("pass").await.unwrap();
    assert_eq!(view.activation.snapshot_version(), Some(20));
    assert_eq!(view.activation.events_replayed, 5);
    assert_eq!(view.state.total, (0..25).sum::<i64>() + 100);
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert_eq!(stats.runtime.activations, 2);
    assert_eq!(stats.aggregate.last_activation.unwrap().events_replayed, 5);
}

/// With the resident tier off (`residency` covers it on), an idle actor leaves a snapshot.
async fn idle_actors_passivate_by_themselves_and_come_back_on_the_next_command(stores: Stores) {
    let settings = AggregateSettings::new()
        .resident(ResidentConfig::off())
        .runtime(RuntimeConfig {
            idle_timeout: Some(Duration::from_millis(50)),
            ..RuntimeConfig::default()
        });
    let executor = executor(&stores, settings);
    executor
        .execute::<Ledger>("idle", LedgerCommand::Add(1))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while executor.is_live::<Ledger>("idle") {
        assert!(tokio::time::Instant::now() < deadline, "never passivated");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    executor.flush_snapshots().await;
    let next = executor
        .execute::<Ledger>("idle", LedgerCommand::Add(2))
        .await
        .unwrap();
    assert_eq!(next.version, 2);
    let view = executor.state::<Ledger>("idle").await.unwrap();
    assert_eq!(
        view.activation.snapshot_version(),
        Some(1),
        "snapshot taken on passivation"
    );
    assert!(executor.stats_of::<Ledger>().unwrap().runtime.passivations >= 1);
}

async fn an_lru_cap_of_100_with_1000_ids_in_use_never_exceeds_100_live(stores: Stores) {
    let settings = AggregateSettings::new().runtime(RuntimeConfig {
        max_live_actors: Some(100),
        ..RuntimeConfig::default()
    });
    let executor = executor(&stores, settings);
    let done = Arc::new(AtomicBool::new(false));
    let max_live = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (executor, done, max_live) =
            (executor.clone(), Arc::clone(&done), Arc::clone(&max_live));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                max_live.fetch_max(
                    executor.stats_of::<Ledger>().unwrap().runtime.live,
                    Ordering::Relaxed,
                );
                tokio::task::yield_now().await;
            }
        })
    };
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let executor = executor.clone();
            tokio::spawn(async move {
                for round in 0..3 {
                    for id in (w..1_000).step_by(16) {
                        executor
                            .execute::<Ledger>(&format!("lru-{id}"), LedgerCommand::Add(round + 1))
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    monitor.await.unwrap();
    assert!(
        max_live.load(Ordering::Relaxed) <= 100,
        "max live {}",
        max_live.load(Ordering::Relaxed)
    );
    let stats = executor.stats_of::<Ledger>().unwrap().runtime;
    assert!(stats.evictions >= 900, "evictions {}", stats.evictions);
    for id in (0..1_000).step_by(50) {
        let stored = stored_events(&*stores.events, &format!("lru-{id}")).await;
        assert_eq!(fold(&stored).total, 6);
    }
}

/// Delays every append, so commands pile up in the actors' mailboxes.
struct SlowAppends;

#[async_trait::async_trait]
impl StoreHooks for SlowAppends {
    async fn append(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        inner.append(stream, expected_version, events).await
    }
}

async fn shutdown_with_commands_in_flight_stores_every_acknowledged_command(stores: Stores) {
    // Slow appends: 50 commands per id take well over 100 ms, so when shutdown begins most of
    // them wait in mailboxes, and shutdown must finish them.
    let executor = Executor::builder(
        Arc::new(Hooked::new(Arc::clone(&stores.events), SlowAppends)),
        Arc::clone(&stores.snapshots),
    )
    .register::<Ledger>(AggregateSettings::new())
    .build()
    .unwrap();
    // Activate every id first so the commands below sit in mailboxes when shutdown begins
    // (a call still waiting for an activation is refused with ShuttingDown instead).
    for id in 0..8 {
        executor
            .execute::<Ledger>(&format!("sd-{id}"), LedgerCommand::Add(1))
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let executor = executor.clone();
            tokio::spawn(async move {
                (
                    i % 8,
                    executor
                        .execute::<Ledger>(&format!("sd-{}", i % 8), LedgerCommand::Add(1))
                        .await,
                )
            })
        })
        .collect();
    // Let the spawned callers reach the mailboxes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while executor
        .stats_of::<Ledger>()
        .unwrap()
        .aggregate
        .commands_succeeded
        < 16
    {
        assert!(
            std::time::Instant::now() < deadline,
            "commands never started"
        );
        tokio::task::yield_now().await;
    }
    // Commands completed before shutdown began (at most; more may finish before it starts).
    let succeeded_before_shutdown = executor
        .stats_of::<Ledger>()
        .unwrap()
        .aggregate
        .commands_succeeded as usize;
    executor.shutdown().await;
    // The 8 activating commands count too.
    let mut acknowledged = [1usize; 8];
    for task in tasks {
        match task.await.unwrap() {
            (id, Ok(_)) => acknowledged[id] += 1,
            (_, Err(CommandError::NotStored(ExecutorError::ShuttingDown))) => {}
            (_, Err(other)) => panic!("unexpected {other}"),
        }
    }
    let total_acknowledged = acknowledged.iter().sum::<usize>();
    assert!(
        total_acknowledged > succeeded_before_shutdown,
        "commands queued when shutdown began were finished and acknowledged \
         ({total_acknowledged} acknowledged, {succeeded_before_shutdown} done before shutdown)"
    );
    assert_eq!(
        executor
            .stats_of::<Ledger>()
            .unwrap()
            .aggregate
            .commands_succeeded as usize,
        total_acknowledged,
        "every command that succeeded was acknowledged to its caller"
    );
    for (id, count) in acknowledged.iter().enumerate() {
        assert_eq!(
            stored_events(&*stores.events, &format!("sd-{id}"))
                .await
                .len(),
            *count,
            "sd-{id}: acknowledged == stored"
        );
    }
    let started = std::time::Instant::now();
    let late = executor
        .execute::<Ledger>("sd-0", LedgerCommand::Add(1))
        .await;
    assert!(matches!(
        late,
        Err(CommandError::NotStored(ExecutorError::ShuttingDown))
    ));
    assert!(matches!(
        executor.state::<Ledger>("sd-0").await,
        Err(ExecutorError::ShuttingDown)
    ));
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
}

async fn reconstruction_at_versions_and_times_equals_the_fold_of_the_prefix(stores: Stores) {
    let settings = AggregateSettings::new()
        .strategy(EveryNEvents::new(10))
        .snapshot_on_passivation(false)
        .retention(Retention {
            keep_newest: 10,
            max_age: None,
        });
    let executor = executor(&stores, settings);
    let mut marks = Vec::new();
    for i in 0..45 {
        executor
            .execute::<Ledger>("tt", LedgerCommand::Add(i * 3 - 20))
            .await
            .unwrap();
        if i % 10 == 9 {
            executor.flush_snapshots().await;
        }
        if i % 7 == 3 {
            // Instants between commands, to reconstruct "as of" them.
            tokio::time::sleep(Duration::from_millis(2)).await;
            marks.push((chrono::Utc::now(), i as u64 + 1));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let all = stored_events(&*stores.events, "tt").await;
    let live_before = executor.state::<Ledger>("tt").await.unwrap();
    for version in [1u64, 9, 10, 11, 19, 20, 21, 33, 40, 45] {
        let r = executor
            .reconstruct::<Ledger>("tt", At::Version(version))
            .await
            .unwrap();
        assert_eq!(
            r.state,
            fold(&all[..version as usize]),
            "at version {version}"
        );
        assert_eq!(r.version, version);
        let from = r.from_snapshot.as_ref().map_or(0, |s| s.version);
        assert_eq!(
            from,
            version / 10 * 10,
            "newest snapshot at or before {version}"
        );
        assert_eq!(r.events_replayed, version - from);
    }
    for (at, version) in marks {
        let r = executor
            .reconstruct::<Ledger>("tt", At::Time(at))
            .await
            .unwrap();
        assert_eq!(r.version, version, "as of {at}");
        assert_eq!(r.state, fold(&all[..version as usize]));
        assert!(r.reached_at.unwrap() <= at);
    }
    assert!(matches!(
        executor.reconstruct::<Ledger>("tt", At::Version(46)).await,
        Err(ExecutorError::VersionNotReached {
            requested: 46,
            current: 45
        })
    ));
    assert!(matches!(
        executor.reconstruct::<Ledger>("none", At::Version(1)).await,
        Err(ExecutorError::NotFound { .. })
    ));
    let live_after = executor.state::<Ledger>("tt").await.unwrap();
    assert_eq!(
        live_after.state, live_before.state,
        "the live actor is untouched"
    );
    assert_eq!(
        executor.stats_of::<Ledger>().unwrap().runtime.activations,
        1
    );
}

on_both_backends! {
    a_thousand_concurrent_commands_to_one_id_get_versions_1_to_1000 => a_thousand_concurrent_commands_to_one_id_get_versions_1_to_1000;
    ten_thousand_ids_under_concurrent_traffic_activate_exactly_once_each => ten_thousand_ids_under_concurrent_traffic_activate_exactly_once_each;
    passivation_then_next_command_reactivates_from_snapshot_plus_tail => passivation_then_the_next_command_reactivates_from_snapshot_plus_tail;
    idle_actors_passivate_and_come_back_on_the_next_command => idle_actors_passivate_by_themselves_and_come_back_on_the_next_command;
    an_lru_cap_of_100_with_1000_ids_never_exceeds_100_live => an_lru_cap_of_100_with_1000_ids_in_use_never_exceeds_100_live;
    shutdown_with_commands_in_flight_stores_every_acknowledged_command => shutdown_with_commands_in_flight_stores_every_acknowledged_command;
    reconstruction_at_versions_and_times_equals_the_prefix_fold => reconstruction_at_versions_and_times_equals_the_fold_of_the_prefix;
}
