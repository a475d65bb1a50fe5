//! A long-lived aggregate (100 000 events, a snapshot every 100): re-activation replays at most
//! 100 events, and the stats say so. Prints activation times with and without snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::common::{Ledger, LedgerCommand, Stores};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{AggregateSettings, Executor};

const EVENTS: u64 = 100_000;

async fn reactivation_replays_at_most_100_events(stores: Stores) {
    // In memory one event per command; on PostgreSQL 50 per command keeps the test quick while
    // every event still goes through the executor.
    let per_command: u64 = if stores.name == "memory" { 1 } else { 50 };
    let settings = || {
        AggregateSettings::<Ledger>::new()
            .strategy(EveryNEvents::new(100))
            .snapshot_on_passivation(false)
    };
    let id = "long-lived";
    let writer = Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Ledger>(settings())
        .build()
        .unwrap();
    for i in 0..EVENTS / per_command {
        let command = if per_command == 1 {
            LedgerCommand::Add(i as i64)
        } else {
            LedgerCommand::AddMany(
                (0..per_command as i64)
                    .map(|k| i as i64 * per_command as i64 + k)
                    .collect(),
            )
        };
        writer.execute::<Ledger>(id, command).await.unwrap();
    }
    // A few more so the newest snapshot is not exactly at the end.
    for i in 0..37 {
        writer
            .execute::<Ledger>(id, LedgerCommand::Add(i))
            .await
            .unwrap();
    }
    writer.shutdown().await;
    let total_events = EVENTS + 37;
    let expected_total: i64 = (0..EVENTS as i64).sum::<i64>() + (0..37).sum::<i64>();

    let with_snapshots =
        Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
            .register::<Ledger>(settings())
            .build()
            .unwrap();
    let view = with_snapshots.state::<Ledger>(id).await.unwrap();
    assert_eq!(view.version, total_events);
    assert_eq!(view.state.total, expected_total);
    assert!(
        view.activation.events_replayed <= 100,
        "replayed {}",
        view.activation.events_replayed
    );
    assert!(view.activation.snapshot_version().is_some());
    let stats = with_snapshots.stats_of::<Ledger>().unwrap().aggregate;
    assert_eq!(stats.activations, 1);
    assert!(stats.mean_replay_size() <= 100.0);
    assert_eq!(stats.max_events_replayed, view.activation.events_replayed);
    assert_eq!(
        stats.last_activation.as_ref().unwrap().events_replayed,
        view.activation.events_replayed
    );
    with_snapshots.shutdown().await;

    let (events, no_snapshots) = stores.without_snapshots();
    let full = Executor::builder(events, no_snapshots)
        .register::<Ledger>(settings())
        .build()
        .unwrap();
    let replayed = full.state::<Ledger>(id).await.unwrap();
    assert_eq!(replayed.state, view.state);
    assert_eq!(replayed.activation.events_replayed, total_events);
    full.shutdown().await;
    eprintln!(
        "[{}] {} events: activation from snapshot {:?} ({} events replayed) vs full replay {:?} ({} events)",
        stores.name,
        total_events,
        view.activation.elapsed,
        view.activation.events_replayed,
        replayed.activation.elapsed,
        replayed.activation.events_replayed
    );
}

on_both_backends! {
    a_100_000_event_aggregate_reactivates_replaying_at_most_100_events => reactivation_replays_at_most_100_events;
}
