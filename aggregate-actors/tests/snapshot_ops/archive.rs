//! Snapshot archival and administration: retention moves old snapshots to an archive (memory,
//! files, PostgreSQL) instead of deleting them; time travel reads them only on request;
//! an archived snapshot is restored; `Executor::snapshots` lists the stored ones, each
//! verified; the per-day statistics count what was created, deleted and archived, and the
//! snapshot store keeps their sum over every executor that wrote.

use std::sync::Arc;

use crate::common::{Ledger, LedgerCommand, Stores, memory, postgres};
use aggregate_actors::event_stores::{
    FileSnapshotArchive, InMemorySnapshotArchive, PgSnapshotArchive, SnapshotArchive, StoreError,
    StreamId,
};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{AggregateSettings, At, Executor, ExecutorError, Retention};

fn settings(archive: Option<Arc<dyn SnapshotArchive>>) -> AggregateSettings<Ledger> {
    let settings = AggregateSettings::<Ledger>::new()
        .strategy(EveryNEvents::new(10))
        .snapshot_on_passivation(false)
        .retention(Retention {
            keep_newest: 2,
            max_age: None,
        });
    match archive {
        Some(archive) => settings.archive(archive),
        None => settings,
    }
}

fn executor(stores: &Stores, settings: AggregateSettings<Ledger>) -> Executor {
    Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Ledger>(settings)
        .build()
        .unwrap()
}

/// 50 events, one command at a time, each snapshot written before the next command.
async fn fifty_events(executor: &Executor, id: &str) {
    for n in 1..=50 {
        executor
            .execute::<Ledger>(id, LedgerCommand::Add(n))
            .await
            .unwrap();
        executor.flush_snapshots().await;
    }
}

async fn archival(stores: &Stores, archive: Arc<dyn SnapshotArchive>, name: &str) {
    let executor = executor(stores, settings(Some(Arc::clone(&archive))));
    fifty_events(&executor, "a").await;
    assert_eq!(stores.snapshot_versions("a").await, vec![40, 50], "{name}");
    let archived: Vec<u64> = executor
        .archived_snapshots::<Ledger>("a")
        .await
        .unwrap()
        .iter()
        .map(|a| a.record.version)
        .collect();
    assert_eq!(archived, vec![30, 20, 10], "{name}: moved, not deleted");
    let stats = executor.stats_of::<Ledger>().unwrap().aggregate;
    assert_eq!((stats.snapshots_archived, stats.snapshots_deleted), (3, 0));
    let today = stats.snapshot_days.last().unwrap().clone();
    assert_eq!((today.created, today.archived, today.deleted), (5, 3, 0));
    assert!(today.bytes > 0 && today.mean_creation_time() > std::time::Duration::ZERO);

    // Time travel reads the archive only when asked.
    let plain = executor
        .reconstruct::<Ledger>("a", At::Version(25))
        .await
        .unwrap();
    assert_eq!(
        (plain.snapshot_version(), plain.events_replayed),
        (None, 25)
    );
    let archived = executor
        .reconstruct_with_archive::<Ledger>("a", At::Version(25))
        .await
        .unwrap();
    assert_eq!(
        (archived.snapshot_version(), archived.events_replayed),
        (Some(20), 5),
        "{name}"
    );
    assert_eq!(archived.state, plain.state);

    // Restored: back in the store, out of the archive, and used again.
    let restored = executor.restore_archived::<Ledger>("a", 30).await.unwrap();
    assert_eq!(restored.version, 30);
    assert_eq!(stores.snapshot_versions("a").await, vec![30, 40, 50]);
    let at_35 = executor
        .reconstruct::<Ledger>("a", At::Version(35))
        .await
        .unwrap();
    assert_eq!(at_35.snapshot_version(), Some(30));
    assert!(matches!(
        executor.restore_archived::<Ledger>("a", 30).await,
        Err(ExecutorError::NotArchived { version: 30, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_old_snapshots_to_an_archive_in_memory() {
    archival(
        &memory(),
        Arc::new(InMemorySnapshotArchive::new()),
        "memory",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_old_snapshots_to_an_archive_in_files() {
    let dir = std::env::temp_dir().join(format!("esa-archive-{}", uuid::Uuid::now_v7()));
    archival(&memory(), Arc::new(FileSnapshotArchive::new(&dir)), "files").await;
    let files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(files, 1, "one directory per aggregate type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_old_snapshots_to_an_archive_table_on_postgres() {
    let Some(stores) = postgres().await else {
        return;
    };
    let pool = stores.pool().unwrap();
    let archive = Arc::new(PgSnapshotArchive::new(pool.clone()));
    archival(&stores, archive, "postgres").await;
    let (live, archived): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM snapshot_archive)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((live, archived), (3, 2), "30 restored, 10 and 20 archived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_archive_retention_deletes_and_restoring_is_a_typed_error() {
    let stores = memory();
    let executor = executor(&stores, settings(None));
    fifty_events(&executor, "d").await;
    assert_eq!(stores.snapshot_versions("d").await, vec![40, 50]);
    let stats = executor.stats_of::<Ledger>().unwrap().aggregate;
    assert_eq!((stats.snapshots_deleted, stats.snapshots_archived), (3, 0));
    assert_eq!(stats.snapshot_days.last().unwrap().deleted, 3);
    assert!(
        executor
            .archived_snapshots::<Ledger>("d")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        executor.restore_archived::<Ledger>("d", 10).await,
        Err(ExecutorError::NoArchive { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_lists_each_stored_snapshot_with_its_verification() {
    let stores = memory();
    let executor = executor(&stores, settings(None));
    fifty_events(&executor, "v").await;
    let listed = executor.snapshots::<Ledger>("v").await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.version).collect::<Vec<_>>(),
        vec![50, 40]
    );
    assert!(listed.iter().all(|s| s.verified.is_ok()), "{listed:?}");

    // Damage the newest: its checksum no longer matches.
    let stream = StreamId::new("ledger", "v").unwrap();
    let mut damaged = stores
        .snapshots
        .load_latest(&stream)
        .await
        .unwrap()
        .unwrap();
    damaged.checksum ^= 1;
    stores.snapshots.save(damaged).await.unwrap();
    let listed = executor.snapshots::<Ledger>("v").await.unwrap();
    let error = listed[0].verified.clone().unwrap_err();
    assert!(error.contains("checksum"), "{error}");
    assert!(listed[1].verified.is_ok());
}

/// The per-day figures of `ledger` the store keeps, summed over the days since yesterday (so
/// a run across midnight UTC adds up the same): created, deleted, archived, bytes.
async fn stored_days(executor: &Executor) -> (u64, u64, u64, u64) {
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let days = executor.snapshot_days("ledger", yesterday).await.unwrap();
    assert!(
        days.iter()
            .all(|d| d.mean_creation_time() > std::time::Duration::ZERO)
    );
    days.iter().fold((0, 0, 0, 0), |(c, d, a, b), day| {
        (
            c + day.created,
            d + day.deleted,
            a + day.archived,
            b + day.bytes,
        )
    })
}

/// Two executors, one after the other (a restart), each writing 5 snapshots of which
/// retention deletes 3: each counts its own 5 and 3 in process, the store keeps 10 and 6.
async fn days_kept_by_the_store(stores: &Stores) -> u64 {
    let mut bytes = 0;
    for id in ["days-1", "days-2"] {
        let executor = executor(stores, settings(None));
        fifty_events(&executor, id).await;
        let own = executor.stats_of::<Ledger>().unwrap().aggregate;
        assert_eq!(
            own.snapshot_days
                .iter()
                .map(|d| (d.created, d.deleted))
                .fold((0, 0), |(c, d), (dc, dd)| (c + dc, d + dd)),
            (5, 3),
            "this executor's own figures"
        );
        bytes += own.snapshot_bytes_stored;
        executor.shutdown().await;
    }
    let reader = executor(stores, settings(None));
    assert_eq!(stored_days(&reader).await, (10, 6, 0, bytes));
    assert!(matches!(
        reader
            .snapshot_days("not-served", chrono::Utc::now().date_naive())
            .await,
        Err(ExecutorError::TypeNotServed { .. })
    ));
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_day_statistics_are_kept_by_the_snapshot_store_across_executors_in_memory() {
    days_kept_by_the_store(&memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_day_statistics_are_kept_by_the_snapshot_store_across_executors_on_postgres() {
    let Some(stores) = postgres().await else {
        return;
    };
    let bytes = days_kept_by_the_store(&stores).await;
    let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT sum(created)::bigint, sum(deleted)::bigint, sum(archived)::bigint, \
         sum(bytes)::bigint, count(*) FROM snapshot_days WHERE aggregate_type = 'ledger'",
    )
    .fetch_one(&stores.pool().unwrap())
    .await
    .unwrap();
    assert_eq!(
        (row.0, row.1, row.2, row.3),
        (10, 6, 0, i64::try_from(bytes).unwrap())
    );
    assert!((1..=2).contains(&row.4), "one row per UTC day: {}", row.4);
}

/// Without a flush, a write's figures reach the store within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_day_statistics_reach_the_store_within_a_second_without_a_flush() {
    let stores = memory();
    let executor = executor(&stores, settings(None));
    for n in 1..=10 {
        executor
            .execute::<Ledger>("soon", LedgerCommand::Add(n))
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    while stored_days(&executor).await.0 == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the snapshot's figures never reached the store"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(stored_days(&executor).await.0, 1);
}

/// The one archived file of `dir` (a single stream's).
fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_snapshot_claiming_version_0_is_refused_as_damaged_and_time_travel_replays() {
    let dir = std::env::temp_dir().join(format!("esa-archive-{}", uuid::Uuid::now_v7()));
    let archive = Arc::new(FileSnapshotArchive::new(&dir));
    let stores = memory();
    let executor = executor(&stores, settings(Some(archive.clone())));
    let stream = StreamId::new("ledger", "zero").unwrap();
    for n in 1..=7 {
        executor
            .execute::<Ledger>("zero", LedgerCommand::Add(n))
            .await
            .unwrap();
    }
    // A valid snapshot at 7 whose archived copy says version 0 (a damaged file).
    assert_eq!(executor.snapshot_now::<Ledger>("zero").await.unwrap(), 7);
    let mut record = stores
        .snapshots
        .load_latest(&stream)
        .await
        .unwrap()
        .unwrap();
    stores.snapshots.delete(&stream, 7).await.unwrap();
    record.version = 0;
    archive.archive(record).await.unwrap();
    let plain = executor
        .reconstruct::<Ledger>("zero", At::Version(7))
        .await
        .unwrap();

    // Under the name of version 0, the archive returns it: time travel skips it as invalid.
    let from_archive = executor
        .reconstruct_with_archive::<Ledger>("zero", At::Version(7))
        .await
        .unwrap();
    assert_eq!(from_archive.state, plain.state);
    assert_eq!(
        (
            from_archive.snapshot_version(),
            from_archive.snapshots_skipped,
            from_archive.events_replayed
        ),
        (None, 1, 7)
    );

    // Under the name of version 5, the archive refuses it as corrupt rather than answer
    // "at or before 7" with a record at version 0.
    let file = only_file(&dir);
    std::fs::rename(&file, file.with_file_name(format!("{:020}.snap", 5))).unwrap();
    assert!(matches!(
        archive.load_archived(&stream, 7).await,
        Err(StoreError::Corrupt(_))
    ));
    let from_archive = executor
        .reconstruct_with_archive::<Ledger>("zero", At::Version(7))
        .await
        .unwrap();
    assert_eq!(from_archive.state, plain.state);
    assert_eq!(from_archive.events_replayed, 7);
    executor.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
