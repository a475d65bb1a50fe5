//! Invariant 4: a snapshot is an optimisation, never a source of truth. Every kind of damage
//! is detected, counted and skipped for the next older snapshot (or a full replay), and the
//! state is the same as without snapshots. A snapshot store that fails every write never fails
//! a command. With incremental snapshots, every damage to a delta falls back to the older
//! snapshot, and damage to a base (or its loss) invalidates the deltas written against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{Ledger, LedgerCommand, Stores, fold, stored_events, stream};
use aggregate_actors::codec::{CompressionConfig, SnapshotCompression, checksum};
use aggregate_actors::event_stores::testing::{HookedSnapshots, SnapshotHooks};
use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, SnapshotRecord, SnapshotStore,
    StoreError, StoreResult,
};
use aggregate_actors::strategy::{EveryNEvents, Never};
use aggregate_actors::{AggregateSettings, Executor, Retention};
use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

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
            algorithm: SnapshotCompression::Zstd { level: 1 },
            ..CompressionConfig::default()
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
        .compression_config(compression)
}

/// Incremental snapshots on (and every state large enough for them): the snapshot at 10 is
/// full, those at 20 and 30 are deltas against it.
fn incremental_settings() -> AggregateSettings<Ledger> {
    settings(true).compression_config(CompressionConfig {
        threshold_bytes: 0,
        algorithm: SnapshotCompression::Zstd { level: 1 },
        max_deltas: 5,
    })
}

fn executor(
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    compress: bool,
) -> Executor {
    executor_with(events, snapshots, settings(compress))
}

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

/// 35 commands: snapshots at versions 10, 20 and 30. Flushing after each one keeps the
/// writer from coalescing them (it would rightly skip 20 if 30 came while 10 was in flight).
async fn history(stores: &Stores, id: &str, compress: bool) {
    history_with(stores, id, settings(compress)).await;
}

async fn history_with(stores: &Stores, id: &str, settings: AggregateSettings<Ledger>) {
    let executor = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        settings,
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

/// Damage only a delta can have: to what it says about its base, or to its compression.
const DELTA_DAMAGES: &[(&str, Damage)] = &[
    ("base missing (the version it names has no snapshot)", |r| {
        if let Some(base) = &mut r.base {
            base.version -= 1;
        }
    }),
    ("base with another checksum than the delta records", |r| {
        if let Some(base) = &mut r.base {
            base.checksum ^= 1;
        }
    }),
    ("no base recorded", |r| r.base = None),
    ("compression renamed to an unknown one", |r| {
        r.compression = "brotli".into()
    }),
    ("compression relabelled as zstd", |r| {
        r.compression = "zstd".into()
    }),
];

/// The incremental history: a full snapshot at 10, deltas against it at 20 and 30.
async fn incremental_history(stores: &Stores, id: &str) {
    history_with(stores, id, incremental_settings()).await;
    let layout: Vec<_> = stores
        .snapshots
        .list(&stream(id), 0, u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.version, r.compression, r.base.map(|b| b.version)))
        .collect();
    let delta = |version| (version, "zstd-delta".to_owned(), Some(10));
    assert_eq!(
        layout,
        vec![delta(30), delta(20), (10, "zstd".into(), None)]
    );
}

/// Activates `id` through a fresh executor on `snapshots` and checks the state, where it
/// started and what it skipped (in the report and the counter).
async fn check_fallback(
    stores: &Stores,
    snapshots: Arc<dyn SnapshotStore>,
    id: &str,
    name: &str,
    (from, skipped): (Option<u64>, u32),
) {
    let fresh = executor_with(Arc::clone(&stores.events), snapshots, settings(true));
    let view = fresh.state::<Ledger>(id).await.unwrap();
    let expected = fold(&stored_events(&*stores.events, id).await);
    assert_eq!(view.state, expected, "{name}: state");
    assert_eq!(view.activation.snapshot_version(), from, "{name}: from");
    assert_eq!(
        view.activation.snapshots_skipped, skipped,
        "{name}: skipped"
    );
    assert_eq!(
        view.activation.events_replayed,
        35 - from.unwrap_or(0),
        "{name}: replays only the tail"
    );
    let stats = fresh.stats_of::<Ledger>().unwrap().aggregate;
    assert_eq!(
        stats.snapshots_skipped_invalid,
        u64::from(skipped),
        "{name}: counted"
    );
    fresh.shutdown().await;
}

async fn each_damage_to_a_delta_is_detected_counted_and_skipped_for_the_older_delta(
    stores: Stores,
) {
    for (case, (name, how)) in DAMAGES.iter().chain(DELTA_DAMAGES).enumerate() {
        let id = format!("damaged-delta-{case}");
        incremental_history(&stores, &id).await;
        damage(&stores, &id, 30, *how).await;
        let snapshots = Arc::clone(&stores.snapshots);
        check_fallback(&stores, snapshots, &id, name, (Some(20), 1)).await;
    }
}

async fn each_damage_to_a_base_invalidates_its_deltas_unless_its_bytes_still_serve(stores: Stores) {
    for (case, (name, how)) in DAMAGES.iter().enumerate() {
        let id = format!("damaged-base-{case}");
        incremental_history(&stores, &id).await;
        damage(&stores, &id, 10, *how).await;
        // A delta needs only its base's bytes: damage to the base's schema version or
        // last_event_id leaves them usable (the delta's own are checked). Any damage to the
        // bytes or checksum invalidates both deltas and the base itself: a full replay.
        let bytes_intact = matches!(
            *name,
            "other state schema version" | "mismatched last_event_id"
        );
        let expected = if bytes_intact {
            (Some(30), 0)
        } else {
            (None, 3)
        };
        let snapshots = Arc::clone(&stores.snapshots);
        check_fallback(&stores, snapshots, &id, name, expected).await;
    }
}

async fn deltas_whose_base_was_deleted_behind_the_stores_back_fall_back_to_a_full_replay(
    stores: Stores,
) {
    let id = "base-deleted";
    incremental_history(&stores, id).await;
    // The stores never delete a base a kept delta names; a copy without it is what a lost row
    // or a partial restore leaves.
    let copy = InMemorySnapshotStore::new();
    for record in stores
        .snapshots
        .list(&stream(id), 0, u64::MAX)
        .await
        .unwrap()
    {
        if record.version != 10 {
            copy.save(record).await.unwrap();
        }
    }
    check_fallback(&stores, Arc::new(copy), id, "base deleted", (None, 2)).await;
}

fn keep_one_every_event() -> AggregateSettings<Ledger> {
    AggregateSettings::new()
        .strategy(EveryNEvents::new(1))
        .snapshot_on_passivation(false)
        .retention(Retention {
            keep_newest: 1,
            max_age: None,
        })
}

/// Invariant 5 with a snapshot ahead of the stream (the event store restored from an older
/// backup): it is invalid, so it must not count among the kept, or each new valid snapshot
/// would be deleted to keep it.
async fn retention_keeps_the_new_snapshot_when_a_stored_one_is_ahead_of_the_stream(stores: Stores) {
    let id = "ahead-of-the-stream";
    let first = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        keep_one_every_event(),
    );
    for i in 0..10 {
        first
            .execute::<Ledger>(id, LedgerCommand::Add(i))
            .await
            .unwrap();
    }
    first.flush_snapshots().await;
    first.shutdown().await;
    // The snapshot at 10 becomes one at 50: what a stream that was at 50 left behind.
    let mut ahead = stores
        .snapshots
        .load_latest(&stream(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ahead.version, 10);
    stores.snapshots.delete(&stream(id), 10).await.unwrap();
    ahead.version = 50;
    stores.snapshots.save(ahead).await.unwrap();

    let second = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        keep_one_every_event(),
    );
    second
        .execute::<Ledger>(id, LedgerCommand::Add(10))
        .await
        .unwrap();
    second.flush_snapshots().await;
    second.shutdown().await;
    assert_eq!(
        stores.snapshot_versions(id).await,
        vec![11, 50],
        "the new snapshot stays; the one ahead is left alone"
    );

    let fresh = executor_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        keep_one_every_event(),
    );
    let view = fresh.state::<Ledger>(id).await.unwrap();
    assert_eq!(view.state, fold(&stored_events(&*stores.events, id).await));
    assert_eq!(view.activation.snapshot_version(), Some(11));
    assert_eq!(view.activation.snapshots_skipped, 1, "the one at 50");
    assert_eq!(view.activation.events_replayed, 0);
    fresh.shutdown().await;
}

/// What a [`TroubledSaves`] store does to a save before (or instead of) storing it.
enum Trouble {
    /// Says it has begun (`entered`), waits until `gate` closes, then fails.
    BlockThenFail { entered: Notify, gate: Semaphore },
    /// The first save panics; the others store.
    PanicOnce(AtomicBool),
}

/// Hooks for an in-memory snapshot store whose saves (both ways of saving: the snapshot writer
/// saves with a read-back) meet a [`Trouble`]; everything else passes through.
struct TroubledSaves {
    trouble: Trouble,
}

impl TroubledSaves {
    fn new(trouble: Trouble) -> Arc<HookedSnapshots<Self>> {
        Arc::new(HookedSnapshots::new(
            Arc::new(InMemorySnapshotStore::new()),
            Self { trouble },
        ))
    }

    /// What happens to a save before the inner store sees it.
    async fn meet(&self) -> StoreResult<()> {
        match &self.trouble {
            Trouble::BlockThenFail { entered, gate } => {
                entered.notify_one();
                let _closed = gate.acquire().await;
                Err(StoreError::Unavailable {
                    message: "the save failed after waiting (test)".into(),
                    source: None,
                })
            }
            Trouble::PanicOnce(panicked) => {
                assert!(
                    panicked.swap(true, Ordering::SeqCst),
                    "the first save panics (test)"
                );
                Ok(())
            }
        }
    }
}

#[async_trait]
impl SnapshotHooks for TroubledSaves {
    async fn save(
        &self,
        inner: &Arc<dyn SnapshotStore>,
        record: SnapshotRecord,
    ) -> StoreResult<()> {
        self.meet().await?;
        inner.save(record).await
    }
    async fn save_and_read_back(
        &self,
        inner: &Arc<dyn SnapshotStore>,
        record: SnapshotRecord,
    ) -> StoreResult<SnapshotRecord> {
        self.meet().await?;
        inner.save_and_read_back(record).await
    }
}

/// An executor on in-memory events and `snapshots` that snapshots only on demand.
fn on_demand(snapshots: Arc<dyn SnapshotStore>, retention: Retention) -> Executor {
    executor_with(
        Arc::new(InMemoryEventStore::new()),
        snapshots,
        AggregateSettings::new()
            .strategy(Never)
            .snapshot_on_passivation(false)
            .retention(retention),
    )
}

/// The answer to `snapshot_now`, which must come within a few seconds.
async fn snapshot_now(executor: &Executor, id: &str) -> Result<u64, String> {
    tokio::time::timeout(Duration::from_secs(5), executor.snapshot_now::<Ledger>(id))
        .await
        .expect("snapshot_now answers")
        .map_err(|error| error.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_now_for_the_version_being_written_gets_that_writes_failure() {
    let store = TroubledSaves::new(Trouble::BlockThenFail {
        entered: Notify::new(),
        gate: Semaphore::new(0),
    });
    let Trouble::BlockThenFail { entered, gate } = &store.trouble else {
        unreachable!()
    };
    let executor = on_demand(store.clone(), Retention::default());
    executor
        .execute::<Ledger>("joined", LedgerCommand::Add(1))
        .await
        .unwrap();
    let first = tokio::spawn({
        let executor = executor.clone();
        async move { snapshot_now(&executor, "joined").await }
    });
    entered.notified().await;
    // The same version again, while its write waits in the store.
    let second = tokio::spawn({
        let executor = executor.clone();
        async move { snapshot_now(&executor, "joined").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "answered before the write ended");
    gate.close();
    assert!(first.await.unwrap().is_err(), "the write failed");
    assert!(
        second.await.unwrap().is_err(),
        "the write it joined failed, so must it"
    );
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_write_that_panics_fails_its_waiters_and_later_writes_of_the_stream_run() {
    let store = TroubledSaves::new(Trouble::PanicOnce(AtomicBool::new(false)));
    let executor = on_demand(store.clone(), Retention::default());
    executor
        .execute::<Ledger>("panicked", LedgerCommand::Add(1))
        .await
        .unwrap();
    let failed = snapshot_now(&executor, "panicked").await.unwrap_err();
    assert!(failed.contains("panicked"), "{failed}");
    executor
        .execute::<Ledger>("panicked", LedgerCommand::Add(2))
        .await
        .unwrap();
    assert_eq!(snapshot_now(&executor, "panicked").await, Ok(2));
    tokio::time::timeout(Duration::from_secs(5), executor.flush_snapshots())
        .await
        .expect("a flush ends");
    let stats = executor.stats_of::<Ledger>().unwrap().aggregate;
    assert_eq!(
        stats.snapshots_failed, 1,
        "the panic counts as a failed write"
    );
    executor.shutdown().await;
    let kept = store.list(&stream("panicked"), 0, u64::MAX).await.unwrap();
    assert_eq!(kept.iter().map(|r| r.version).collect::<Vec<_>>(), vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_max_age_beyond_representable_time_keeps_snapshots_by_count_only() {
    let store = Arc::new(InMemorySnapshotStore::new());
    let executor = on_demand(
        store.clone(),
        Retention {
            keep_newest: 2,
            // Reaches back before the earliest time chrono can represent.
            max_age: Some(Duration::from_secs(300_000 * 366 * 24 * 3_600)),
        },
    );
    for version in 1..=3 {
        executor
            .execute::<Ledger>("ageless", LedgerCommand::Add(1))
            .await
            .unwrap();
        assert_eq!(snapshot_now(&executor, "ageless").await, Ok(version));
    }
    executor.shutdown().await;
    let kept = store.list(&stream("ageless"), 0, u64::MAX).await.unwrap();
    assert_eq!(
        kept.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![3, 2]
    );
}

on_both_backends! {
    retention_never_deletes_the_new_snapshot_for_one_ahead_of_the_stream => retention_keeps_the_new_snapshot_when_a_stored_one_is_ahead_of_the_stream;
    each_kind_of_delta_damage_is_detected_counted_and_skipped => each_damage_to_a_delta_is_detected_counted_and_skipped_for_the_older_delta;
    each_kind_of_base_damage_falls_back_as_far_as_needed => each_damage_to_a_base_invalidates_its_deltas_unless_its_bytes_still_serve;
    deltas_without_their_base_fall_back_to_a_full_replay => deltas_whose_base_was_deleted_behind_the_stores_back_fall_back_to_a_full_replay;
    each_kind_of_snapshot_damage_is_detected_counted_and_skipped => each_damage_is_detected_counted_and_skipped;
    with_every_snapshot_damaged_state_comes_from_a_full_replay => with_every_snapshot_damaged_the_state_comes_from_a_full_replay;
    snapshot_store_failing_every_write_never_fails_a_command => a_snapshot_store_that_fails_every_write_never_fails_a_command;
}
