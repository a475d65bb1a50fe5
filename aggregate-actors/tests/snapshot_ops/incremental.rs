//! Incremental (delta) snapshots and the choice of compression, on both backends: deltas are
//! written against the newest full snapshot up to `max_deltas`, are much smaller than full
//! snapshots of a large state that changes a little, are what activation and time travel start
//! from, survive retention together with their bases, and snapshots compressed with zstd, lz4
//! or nothing all read back side by side. Damage to deltas and to their bases is in
//! `actors/snapshot_integrity.rs`.

use std::sync::Arc;

use crate::common::Stores;
use aggregate_actors::codec::{COMPRESSION_ZSTD_DELTA, CompressionConfig, InvalidCompression};
use aggregate_actors::event_stores::{InMemoryEventStore, InMemorySnapshotStore, StreamId};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{
    Aggregate, AggregateSettings, At, BuildError, Context, Executor, Retention, SnapshotCompression,
};
use serde::{Deserialize, Serialize};

/// An aggregate with a large state (a vector of pseudo-random numbers) that each command
/// changes a little: the case incremental snapshots are for.
struct Blob;

#[derive(Debug, Clone)]
enum BlobCommand {
    Fill { seed: u64, cells: u32 },
    Set { index: u32, value: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum BlobEvent {
    Filled { seed: u64, cells: u32 },
    Set { index: u32, value: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct BlobState {
    cells: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Blob {
    const TYPE: &'static str = "blob";
    type Command = BlobCommand;
    type Event = BlobEvent;
    type State = BlobState;
    type Error = Never;

    fn decide(
        _: &BlobState,
        command: &BlobCommand,
        _: &mut Context<'_, Self>,
    ) -> Result<Vec<BlobEvent>, Never> {
        Ok(vec![match *command {
            BlobCommand::Fill { seed, cells } => BlobEvent::Filled { seed, cells },
            BlobCommand::Set { index, value } => BlobEvent::Set { index, value },
        }])
    }

    fn apply(state: &mut BlobState, event: &BlobEvent) {
        match *event {
            BlobEvent::Filled { seed, cells } => {
                let mut x = seed;
                state.cells = (0..cells)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        // High bits set: 9 bytes of MessagePack each, and barely compressible.
                        x | (1 << 63)
                    })
                    .collect();
            }
            BlobEvent::Set { index, value } => {
                if let Some(cell) = state.cells.get_mut(index as usize) {
                    *cell = value;
                }
            }
        }
    }
}

/// 11 400 cells of 9 bytes: a state of about 100 KiB.
const CELLS: u32 = 11_400;

fn fold(commands: &[BlobCommand]) -> BlobState {
    let mut state = BlobState::default();
    for command in commands {
        for event in Blob::decide(&state, command, &mut Context::standalone("x")).unwrap() {
            Blob::apply(&mut state, &event);
        }
    }
    state
}

/// Fill, then `sets` small changes.
fn commands(sets: u32) -> Vec<BlobCommand> {
    std::iter::once(BlobCommand::Fill {
        seed: 7,
        cells: CELLS,
    })
    .chain((0..sets).map(|i| BlobCommand::Set {
        index: i * 97 % CELLS,
        value: u64::from(i),
    }))
    .collect()
}

/// A snapshot after every command; ten kept unless said otherwise.
fn settings() -> AggregateSettings<Blob> {
    AggregateSettings::new()
        .strategy(EveryNEvents::new(1))
        .snapshot_on_passivation(false)
        .retention(Retention {
            keep_newest: 10,
            max_age: None,
        })
}

fn executor(stores: &Stores, settings: AggregateSettings<Blob>) -> Executor {
    Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Blob>(settings)
        .build()
        .unwrap()
}

/// Runs `commands` on `id`, flushing the snapshot writer after each so every version gets its
/// own snapshot (the writer would rightly coalesce a burst).
async fn run(executor: &Executor, id: &str, commands: &[BlobCommand]) {
    for command in commands {
        executor.execute::<Blob>(id, command.clone()).await.unwrap();
        executor.flush_snapshots().await;
    }
}

/// `(version, compression, base version)` of every kept snapshot, newest first.
async fn kept(stores: &Stores, id: &str) -> Vec<(u64, String, Option<u64>)> {
    let stream = StreamId::new(Blob::TYPE, id).unwrap();
    stores
        .snapshots
        .list(&stream, 0, u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.version, r.compression, r.base.map(|b| b.version)))
        .collect()
}

fn full(version: u64, compression: &str) -> (u64, String, Option<u64>) {
    (version, compression.to_owned(), None)
}

fn delta(version: u64, base: u64) -> (u64, String, Option<u64>) {
    (version, COMPRESSION_ZSTD_DELTA.to_owned(), Some(base))
}

async fn deltas_follow_a_full_snapshot_up_to_max_deltas_and_activation_starts_from_the_newest(
    stores: Stores,
) {
    let id = "chain";
    let writer = executor(&stores, settings().incremental(3));
    let history = commands(5);
    run(&writer, id, &history).await;
    let stats = writer.stats_of::<Blob>().unwrap().aggregate;
    writer.shutdown().await;
    assert_eq!(
        kept(&stores, id).await,
        vec![
            delta(6, 5),
            full(5, "zstd"),
            delta(4, 1),
            delta(3, 1),
            delta(2, 1),
            full(1, "zstd"),
        ],
        "three deltas on the first full snapshot, then a full one, then a delta on it"
    );
    assert_eq!((stats.snapshots_taken, stats.snapshots_delta), (6, 4));

    let reader = executor(&stores, settings());
    let view = reader.state::<Blob>(id).await.unwrap();
    assert_eq!(view.state, fold(&history));
    assert_eq!(
        view.activation.snapshot_version(),
        Some(6),
        "from the delta"
    );
    assert_eq!(view.activation.snapshots_skipped, 0);
    assert_eq!(view.activation.events_replayed, 0);
    // Time travel starts from the delta at or before the target, too.
    for version in [3u64, 4] {
        let past = reader
            .reconstruct::<Blob>(id, At::Version(version))
            .await
            .unwrap();
        assert_eq!(past.state, fold(&history[..version as usize]));
        assert_eq!(past.snapshot_version(), Some(version));
        assert_eq!((past.snapshots_skipped, past.events_replayed), (0, 0));
    }
    // At the time event 4 was recorded, the newest snapshot taken is the delta at 3.
    let event_4 = reader
        .reconstruct::<Blob>(id, At::Version(4))
        .await
        .unwrap();
    let at_time = reader
        .reconstruct::<Blob>(id, At::Time(event_4.reached_at.unwrap()))
        .await
        .unwrap();
    assert_eq!(at_time.state, fold(&history[..4]));
    assert_eq!(at_time.snapshot_version(), Some(3));
    assert_eq!((at_time.snapshots_skipped, at_time.events_replayed), (0, 1));
    reader.shutdown().await;
}

async fn a_delta_of_a_100_kib_state_changed_a_little_is_at_most_a_tenth_of_a_full_snapshot(
    stores: Stores,
) {
    let id = "ratio";
    let writer = executor(&stores, settings().incremental(8));
    run(&writer, id, &commands(1)).await;
    writer.shutdown().await;
    let stream = StreamId::new(Blob::TYPE, id).unwrap();
    let list = stores.snapshots.list(&stream, 0, u64::MAX).await.unwrap();
    let [delta, full] = &list[..] else {
        panic!("expected two snapshots, got {}", list.len());
    };
    assert_eq!(delta.compression, COMPRESSION_ZSTD_DELTA);
    assert!(full.uncompressed_size >= 100 * 1024, "a 100 KiB state");
    let ratio = delta.stored_size as f64 / full.stored_size as f64;
    println!(
        "{}: state {} B, full snapshot {} B, delta {} B: delta/full = {ratio:.4}",
        stores.name, delta.uncompressed_size, full.stored_size, delta.stored_size
    );
    assert!(ratio <= 0.1, "delta/full = {ratio}");
}

async fn retention_keeps_the_base_of_every_kept_delta(stores: Stores) {
    let id = "retained";
    let writer = executor(
        &stores,
        settings()
            .retention(Retention {
                keep_newest: 2,
                max_age: None,
            })
            .compression(SnapshotCompression::Lz4)
            .incremental(5),
    );
    let history = commands(3);
    run(&writer, id, &history).await;
    writer.shutdown().await;
    assert_eq!(
        kept(&stores, id).await,
        vec![delta(4, 1), delta(3, 1), full(1, "lz4")],
        "the newest two, and the (lz4) full snapshot they were written against"
    );
    let reader = executor(&stores, settings());
    let view = reader.state::<Blob>(id).await.unwrap();
    assert_eq!(view.state, fold(&history));
    assert_eq!(view.activation.snapshot_version(), Some(4));
    reader.shutdown().await;
}

async fn zstd_lz4_and_uncompressed_snapshots_of_one_aggregate_all_read_back(stores: Stores) {
    let id = "mixed";
    let history = commands(2);
    let algorithms = [
        SnapshotCompression::Zstd { level: 1 },
        SnapshotCompression::Lz4,
        SnapshotCompression::None,
    ];
    for (command, algorithm) in history.iter().zip(algorithms) {
        let writer = executor(&stores, settings().compression(algorithm));
        run(&writer, id, std::slice::from_ref(command)).await;
        writer.shutdown().await;
    }
    assert_eq!(
        kept(&stores, id).await,
        vec![full(3, "none"), full(2, "lz4"), full(1, "zstd")]
    );
    let reader = executor(&stores, settings());
    for version in 1..=3u64 {
        let past = reader
            .reconstruct::<Blob>(id, At::Version(version))
            .await
            .unwrap();
        assert_eq!(past.state, fold(&history[..version as usize]));
        assert_eq!(past.snapshot_version(), Some(version), "read from its own");
        assert_eq!(past.snapshots_skipped, 0);
    }
    reader.shutdown().await;
}

async fn states_below_the_compression_threshold_are_always_written_in_full(stores: Stores) {
    let id = "small";
    let writer = executor(&stores, settings().incremental(5));
    let small = [
        BlobCommand::Fill { seed: 1, cells: 8 },
        BlobCommand::Set { index: 1, value: 2 },
    ];
    run(&writer, id, &small).await;
    writer.shutdown().await;
    assert_eq!(
        kept(&stores, id).await,
        vec![full(2, "none"), full(1, "none")]
    );
}

on_both_backends! {
    deltas_follow_a_full_snapshot_up_to_max_deltas_and_activation_starts_from_the_newest
        => deltas_follow_a_full_snapshot_up_to_max_deltas_and_activation_starts_from_the_newest;
    a_delta_of_a_100_kib_state_changed_a_little_is_at_most_a_tenth_of_a_full_snapshot
        => a_delta_of_a_100_kib_state_changed_a_little_is_at_most_a_tenth_of_a_full_snapshot;
    retention_keeps_the_base_of_every_kept_delta => retention_keeps_the_base_of_every_kept_delta;
    zstd_lz4_and_uncompressed_snapshots_of_one_aggregate_all_read_back
        => zstd_lz4_and_uncompressed_snapshots_of_one_aggregate_all_read_back;
    states_below_the_compression_threshold_are_always_written_in_full
        => states_below_the_compression_threshold_are_always_written_in_full;
}

#[tokio::test]
async fn a_zstd_level_out_of_range_fails_the_build_with_a_typed_error() {
    let build = |level| {
        Executor::builder(
            Arc::new(InMemoryEventStore::new()),
            Arc::new(InMemorySnapshotStore::new()),
        )
        .register::<Blob>(settings().compression(SnapshotCompression::Zstd { level }))
        .build()
    };
    match build(23) {
        Err(BuildError::InvalidCompression {
            aggregate_type: "blob",
            source: InvalidCompression::ZstdLevel { level: 23, max, .. },
        }) => assert_eq!(max, 22),
        Err(other) => panic!("expected InvalidCompression, got {other}"),
        Ok(_) => panic!("zstd level 23 was accepted"),
    }
    assert!(build(22).is_ok() && build(1).is_ok());
    assert!(CompressionConfig::default().validate().is_ok());
}
