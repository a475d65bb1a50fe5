//! Backup and restore at size: 100 000 wallet events over 1 000 streams (some with snapshots)
//! exported from PostgreSQL to a file, imported into a fresh PostgreSQL database and into
//! memory; every wallet's state, as the framework rebuilds it, is the same in all three.
//! Prints the events, the file's bytes and the export and import times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufWriter;
use std::sync::Arc;
use std::time::Instant;

use aggregate_actors::event_stores::backup::{self, BackupScope, ExportOptions, ImportOptions};
use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, NewEvent, SnapshotStore, StoreLimits,
};
use aggregate_actors::{AggregateSettings, Executor, codec};
use integration_tests::audit::wallet_stream;
use integration_tests::reading_executor;
use integration_tests::wallet::{Wallet, WalletEvent, WalletState};
use sqlx::PgPool;
use tokio::task::JoinSet;
use uuid::Uuid;

const STREAMS: usize = 1_000;
const EVENTS_PER_STREAM: usize = 100;
/// Events are appended in this many rounds over all streams, so that streams interleave in
/// the store's position order (and so in the file) as they do in a live store.
const ROUNDS: usize = 4;
/// Streams that get a snapshot, taken after the third round.
const SNAPSHOTTED: usize = 20;

fn wallet_id(n: usize) -> String {
    format!("w-{n:04}")
}

/// One round of events for wallets `ids`: `EVENTS_PER_STREAM / ROUNDS` deposits each, one
/// append per wallet.
async fn append_round(events: Arc<dyn EventStore>, ids: Vec<usize>, round: usize) {
    let per_round = EVENTS_PER_STREAM / ROUNDS;
    for n in ids {
        let stream = wallet_stream(&wallet_id(n));
        let batch: Vec<NewEvent> = (0..per_round)
            .map(|i| {
                let deposit = WalletEvent::Deposited {
                    command: Uuid::now_v7(),
                    part: 0,
                    parts: 1,
                    amount: (n * 7 + round * 13 + i) as i64 % 97 + 1,
                };
                NewEvent::new("Deposited", 1, codec::encode(&deposit).unwrap())
            })
            .collect();
        let expected = (round * per_round) as u64;
        events.append(&stream, expected, batch).await.unwrap();
    }
}

/// Seeds `STREAMS` wallets in `ROUNDS` rounds, eight appenders at a time (their appends share
/// commits), with snapshots of the first `SNAPSHOTTED` wallets before the last round.
async fn seed(events: &Arc<dyn EventStore>, snapshots: &Arc<dyn SnapshotStore>) {
    for round in 0..ROUNDS {
        let mut appenders = JoinSet::new();
        for worker in 0..8 {
            let ids = (worker..STREAMS).step_by(8).collect();
            appenders.spawn(append_round(Arc::clone(events), ids, round));
        }
        appenders.join_all().await;
        if round == ROUNDS - 2 {
            let writer = Executor::builder(Arc::clone(events), Arc::clone(snapshots))
                .register::<Wallet>(AggregateSettings::new().snapshot_on_passivation(false))
                .build()
                .unwrap();
            for n in 0..SNAPSHOTTED {
                writer.snapshot_now::<Wallet>(&wallet_id(n)).await.unwrap();
            }
            writer.shutdown().await;
        }
    }
}

/// A wallet's version, state, and the snapshot version its activation started from.
type Seen = (u64, WalletState, Option<u64>);

/// Every wallet's state and version through `executor`, in wallet order, eight at a time;
/// also the version of the snapshot each activation started from.
async fn states(executor: &Executor) -> Vec<Seen> {
    let mut readers = JoinSet::new();
    for worker in 0..8 {
        let executor = executor.clone();
        readers.spawn(async move {
            let mut found = Vec::new();
            for n in (worker..STREAMS).step_by(8) {
                let view = executor.state::<Wallet>(&wallet_id(n)).await.unwrap();
                let from = view.activation.snapshot_version();
                found.push((n, (view.version, view.state, from)));
                // Passivated again, so memory stays flat while all 1 000 are read.
                executor.passivate::<Wallet>(&wallet_id(n)).await.unwrap();
            }
            found
        });
    }
    let mut all: Vec<_> = readers.join_all().await.into_iter().flatten().collect();
    all.sort_by_key(|(n, _)| *n);
    all.into_iter().map(|(_, state)| state).collect()
}

async fn counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), \
                (SELECT count(DISTINCT (aggregate_type, aggregate_id)) FROM events), \
                (SELECT count(*) FROM snapshots)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn rate(count: u64, seconds: f64) -> String {
    format!("{:.0} events/s", count as f64 / seconds.max(1e-9))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_events_round_trip_from_postgres_into_postgres_and_memory_with_equal_states()
 {
    let Some(source_db) = fresh_database().await else {
        return;
    };
    let Some(target_db) = fresh_database().await else {
        return;
    };
    let (source_events, source_snapshots) = source_db.stores(StoreLimits::default()).await.unwrap();
    let source_pool = source_events.pool().clone();
    let source_events: Arc<dyn EventStore> = Arc::new(source_events);
    let source_snapshots: Arc<dyn SnapshotStore> = Arc::new(source_snapshots);
    let seeding = Instant::now();
    seed(&source_events, &source_snapshots).await;
    let total = (STREAMS * EVENTS_PER_STREAM) as u64;
    eprintln!("seeded {total} events in {:.2?}", seeding.elapsed());

    let path = std::env::temp_dir().join(format!("backup-round-trip-{}.esb", Uuid::new_v4()));
    let _remove = RemoveOnDrop(path.clone());
    let out = BufWriter::new(std::fs::File::create(&path).unwrap());
    let exported = backup::export(
        &*source_events,
        &*source_snapshots,
        &BackupScope::all(),
        out,
        &ExportOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(exported.events, total);
    assert_eq!(exported.streams, STREAMS as u64);
    assert_eq!(exported.snapshots, SNAPSHOTTED as u64);
    assert_eq!(exported.bytes, std::fs::metadata(&path).unwrap().len());
    let export_s = exported.elapsed.as_secs_f64();

    let (target_events, target_snapshots) = target_db.stores(StoreLimits::default()).await.unwrap();
    let target_pool = target_events.pool().clone();
    let target_events: Arc<dyn EventStore> = Arc::new(target_events);
    let target_snapshots: Arc<dyn SnapshotStore> = Arc::new(target_snapshots);
    let options = ImportOptions::default();
    let into_pg = backup::import_file(&path, &*target_events, &*target_snapshots, &options, |_| {})
        .await
        .unwrap();
    assert_eq!(into_pg.events_written, total);
    assert_eq!(into_pg.snapshots_saved, SNAPSHOTTED as u64);

    let memory_events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let memory_snapshots: Arc<dyn SnapshotStore> = Arc::new(InMemorySnapshotStore::new());
    let into_memory =
        backup::import_file(&path, &*memory_events, &*memory_snapshots, &options, |_| {})
            .await
            .unwrap();
    assert_eq!(into_memory.events_written, total);

    println!(
        "backup round trip: {total} events over {STREAMS} streams, {} snapshots, file {} bytes \
         ({:.1} bytes/event)",
        exported.snapshots,
        exported.bytes,
        exported.bytes as f64 / total as f64
    );
    println!(
        "  export from PostgreSQL:   {export_s:.2} s ({})",
        rate(total, export_s)
    );
    for (name, report) in [("PostgreSQL", &into_pg), ("memory", &into_memory)] {
        let (verify, write) = (
            report.verify_time.as_secs_f64(),
            report.write_time.as_secs_f64(),
        );
        println!(
            "  import into {name:<11} {:.2} s: verify {verify:.2} s, write {write:.2} s ({})",
            verify + write,
            rate(total, verify + write)
        );
    }

    let expected_counts = (total as i64, STREAMS as i64, SNAPSHOTTED as i64);
    assert_eq!(counts(&source_pool).await, expected_counts);
    assert_eq!(counts(&target_pool).await, expected_counts);

    let source = states(&reading_executor(source_events, source_snapshots)).await;
    let restored = states(&reading_executor(target_events, target_snapshots)).await;
    let in_memory = states(&reading_executor(memory_events, memory_snapshots)).await;
    assert_eq!(source.len(), STREAMS);
    assert!(
        source
            .iter()
            .all(|(version, state, _)| *version == EVENTS_PER_STREAM as u64
                && state.events == EVENTS_PER_STREAM as u64)
    );
    // The imported snapshots are used: the snapshotted wallets start from them.
    let snapshot_at = (EVENTS_PER_STREAM / ROUNDS * (ROUNDS - 1)) as u64;
    for states in [&source, &restored, &in_memory] {
        let from: Vec<_> = states.iter().map(|(_, _, from)| *from).collect();
        assert!(from[..SNAPSHOTTED].iter().all(|v| *v == Some(snapshot_at)));
        assert!(from[SNAPSHOTTED..].iter().all(Option::is_none));
    }
    let without_origin = |states: &[Seen]| -> Vec<(u64, WalletState)> {
        states.iter().map(|(v, s, _)| (*v, s.clone())).collect()
    };
    assert!(
        without_origin(&restored) == without_origin(&source),
        "a wallet's state differs after the PostgreSQL import"
    );
    assert!(
        without_origin(&in_memory) == without_origin(&source),
        "a wallet's state differs after the in-memory import"
    );
}

/// Deletes the backup file when the test ends, passed or not.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
