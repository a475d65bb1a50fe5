//! Invariant 4: a snapshot is an optimisation, never a source of truth. Every kind of damage
//! is detected, counted and skipped for the next older snapshot (or a full replay), and the
//! state is the same as without snapshots. A snapshot store that fails every write never fails
//! a command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use aggregate_actors::codec::{CompressionConfig, checksum};
use aggregate_actors::event_stores::{EventStore, SnapshotRecord, SnapshotStore};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{AggregateSettings, Executor, Retention};
use common::{Ledger, LedgerCommand, Stores, fold, stored_events, stream};

type Damage = fn(&mut SnapshotRecord);

const DAMAGES: &[(&str, Damage)] = &[
    ("bit flip", |r| {
        let mut bytes = r.bytes.to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        r.bytes = bytes.into();
    }),
    ("truncation", |r| {
        let half = r.bytes.len() / 2;
        r.bytes = r.bytes.slice(..half);
        r.stored_size = half as u64;
    }),
    ("wrong checksum", |r| r.checksum ^= 1),
    ("other state schema version", |r| {
        r.state_schema_version += 1
    }),
    ("mismatched last_event_id", |r| {
        r.last_event_id = uuid::Uuid::now_v7()
    }),
    ("undecodable bytes with a valid checksum", |r| {
        let garbage: Vec<u8> = (0..r.bytes.len().max(8))
            .map(|i| (i * 37 % 251) as u8 | 0xC1)
            .collect();
        r.checksum = checksum(&garbage);
        r.stored_size = garbage.len() as u64;
        r.uncompressed_size = garbage.len() as u64;
        r.compression = "none".into();
        r.bytes = garbage.into();
    }),
];

fn settings(compress_everything: bool) -> AggregateSettings<Ledger> {
    let compression = if compress_everything {
        CompressionConfig {
            threshold_bytes: 0,
            zstd_level: 1,
        }
    } else {
        CompressionConfig::default()
    };
    AggregateSettings::new()
        .strategy(EveryNEvents::new(10))
        .snapshot_on_passivation(false)
        .retention(Retention {
            keep_newest: 10,
            max_age: None,
        })
        .compression(compression)
}

fn executor(
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    compress: bool,
) -> Executor {
    Executor::builder(events, snapshots)
        .register::<Ledger>(settings(compress))
        .build()
        .unwrap()
}

/// 35 commands: snapshots at versions 10, 20 and 30. Flushing after each one keeps the
/// writer from coalescing them (it would rightly skip 20 if 30 came while 10 was in flight).
async fn history(stores: &Stores, id: &str, compress: bool) {
    let executor = executor(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        compress,
    );
    for i in 0..35 {
        executor
            .execute::<Ledger>(id, LedgerCommand::Add(i * 7 - 50))
            .await
            .unwrap();
        if i % 10 == 9 {
            executor.flush_snapshots().await;
        }
    }
    executor.shutdown().await;
    let kept: Vec<u64> = stores
        .snapshots
        .list(&stream(id), 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(kept, vec![30, 20, 10]);
}

async fn damage(stores: &Stores, id: &str, version: u64, how: Damage) {
    let mut record = stores
        .snapshots
        .load_at_or_before_version(&stream(id), version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.version, version);
    how(&mut record);
    stores.snapshots.save(record).await.unwrap();
}

async fn each_damage_is_detected_counted_and_skipped(stores: Stores) {
    for compress in [false, true] {
        for (case, (name, how)) in DAMAGES.iter().enumerate() {
            let id = format!("damaged-{case}-{compress}");
            history(&stores, &id, compress).await;
            damage(&stores, &id, 30, *how).await;

            let fresh = executor(
                Arc::clone(&stores.events),
                Arc::clone(&stores.snapshots),
                compress,
            );
            let view = fresh.state::<Ledger>(&id).await.unwrap();
            let expected = fold(&stored_events(&*stores.events, &id).await);
            assert_eq!(
                view.state, expected,
                "{name} (compressed: {compress}): state"
            );
            assert_eq!(
                view.activation.snapshot_version(),
                Some(20),
                "{name}: falls back to the next older snapshot"
            );
            assert_eq!(view.activation.snapshots_skipped, 1, "{name}: skipped");
            assert_eq!(
                view.activation.events_replayed, 15,
                "{name}: replays only the tail after 20"
            );
            let stats = fresh.stats_of::<Ledger>().unwrap().aggregate;
            assert_eq!(stats.snapshots_skipped_invalid, 1, "{name}: counted");
            fresh.shutdown().await;
        }
    }
}

async fn with_every_snapshot_damaged_the_state_comes_from_a_full_replay(stores: Stores) {
    let id = "all-damaged";
    history(&stores, id, false).await;
    for (version, (_, how)) in [30u64, 20, 10].into_iter().zip(DAMAGES) {
        damage(&stores, id, version, *how).await;
    }
    let fresh = executor(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        false,
    );
    let view = fresh.state::<Ledger>(id).await.unwrap();
    assert_eq!(view.state, fold(&stored_events(&*stores.events, id).await));
    assert_eq!(view.activation.snapshot_version(), None);
    assert_eq!(view.activation.snapshots_skipped, 3);
    assert_eq!(view.activation.events_replayed, 35);
    assert_eq!(
        fresh
            .stats_of::<Ledger>()
            .unwrap()
            .aggregate
            .snapshots_skipped_invalid,
        3
    );
    fresh.shutdown().await;
}

async fn a_snapshot_store_that_fails_every_write_never_fails_a_command(stores: Stores) {
    let (events, failing) = stores.with_failing_snapshots();
    let executor = Executor::builder(Arc::clone(&events), failing)
        .register::<Ledger>(AggregateSettings::new().strategy(EveryNEvents::new(1)))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for id in 0..10 {
        let executor = executor.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                executor
                    .execute::<Ledger>(&format!("failing-{id}"), LedgerCommand::Add(i))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    executor.shutdown().await;
    let stats = executor.stats_of::<Ledger>().unwrap().aggregate;
    assert_eq!(stats.commands_succeeded, 300);
    assert_eq!(stats.snapshots_taken, 0);
    assert!(stats.snapshots_failed > 0, "failed writes are counted");
    for id in 0..10 {
        let stored = stored_events(&*events, &format!("failing-{id}")).await;
        assert_eq!(stored.len(), 30, "no event lost");
        assert_eq!(fold(&stored).total, (0..30).sum::<i64>());
    }
}

on_both_backends! {
    each_kind_of_snapshot_damage_is_detected_counted_and_skipped => each_damage_is_detected_counted_and_skipped;
    with_every_snapshot_damaged_state_comes_from_a_full_replay => with_every_snapshot_damaged_the_state_comes_from_a_full_replay;
    snapshot_store_failing_every_write_never_fails_a_command => a_snapshot_store_that_fails_every_write_never_fails_a_command;
}
