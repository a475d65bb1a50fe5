//! Reconstruction at the very start of a history: before the first event an aggregate that
//! exists is in its default state at version 0, whether asked by time or by version. (There is
//! no executor API to list an aggregate's snapshots; tests read them with the snapshot store's
//! `list`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Ledger, LedgerCommand, LedgerState, Stores, fold, stored_events};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{AggregateSettings, At, Executor};

fn executor(stores: &Stores) -> Executor {
    Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Ledger>(
            AggregateSettings::new()
                .strategy(EveryNEvents::new(1))
                .snapshot_on_passivation(false),
        )
        .build()
        .unwrap()
}

async fn reconstructing_before_the_first_event_gives_the_default_state_at_version_0(
    stores: Stores,
) {
    let executor = executor(&stores);
    let before_first = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    for amount in [5, 7, 11] {
        executor
            .execute::<Ledger>("early", LedgerCommand::Add(amount))
            .await
            .unwrap();
    }
    executor.flush_snapshots().await;

    let by_time = executor
        .reconstruct::<Ledger>("early", At::Time(before_first))
        .await
        .unwrap();
    assert_eq!(by_time.version, 0);
    assert_eq!(by_time.state, LedgerState::default());
    assert_eq!(by_time.reached_at, None);
    assert_eq!(by_time.events_replayed, 0);
    assert!(by_time.from_snapshot.is_none(), "no snapshot is that old");

    let by_version = executor
        .reconstruct::<Ledger>("early", At::Version(0))
        .await
        .unwrap();
    assert_eq!(by_version.version, 0);
    assert_eq!(by_version.state, LedgerState::default());
    assert_eq!(by_version.reached_at, None);
    assert_eq!(by_version.events_replayed, 0);
    assert!(by_version.from_snapshot.is_none());

    // And the first event is where the history starts.
    let first = executor
        .reconstruct::<Ledger>("early", At::Version(1))
        .await
        .unwrap();
    let all = stored_events(&*stores.events, "early").await;
    assert_eq!(first.state, fold(&all[..1]));
    assert!(first.reached_at.unwrap() >= before_first);
    executor.shutdown().await;
}

on_both_backends! {
    reconstructing_before_the_first_event_gives_the_default_state_at_version_0 => reconstructing_before_the_first_event_gives_the_default_state_at_version_0;
}
