//! Two worker processes, each with its own executor, send commands to the same few wallets on
//! one database at the same time. The event store's expected-version check is the only thing
//! between them: conflicts are retried on fresh state or reported, never a duplicate or
//! missing version; what was acknowledged is exactly what is stored; withdrawals never
//! overdraw (no decision on stale state); states equal the fold.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{EventStore, SnapshotStore, StoreLimits};
use integration_tests::audit::{assert_audit, assert_states_equal_fold, read_all_wallets};
use integration_tests::worker::{WorkerArgs, WorkerOutput, WorkerProcess};
use integration_tests::{reading_executor, seed};

const WORKER: &str = env!("CARGO_BIN_EXE_ledger_worker");

async fn race(
    url: &str,
    seed: u64,
    commands_per_task: u64,
    max_conflict_retries: u32,
) -> Vec<WorkerOutput> {
    let mut workers = Vec::new();
    for n in 0..2u64 {
        let mut args = WorkerArgs::new(url);
        args.name = format!("writer-{n}");
        args.prefix = format!("shared-r{max_conflict_retries}");
        args.ids = 3;
        args.tasks = 3;
        args.commands = commands_per_task;
        args.seed = seed.wrapping_add(n);
        args.snapshot_every = 4;
        args.max_conflict_retries = max_conflict_retries;
        args.wait_for_go = true;
        workers.push(WorkerProcess::spawn(WORKER, &args).unwrap());
    }
    // Both connected before either sends, so their loads overlap.
    for worker in &mut workers {
        worker.wait_ready(Duration::from_secs(30)).await;
    }
    for worker in &mut workers {
        worker.go().await;
    }
    let mut outputs = Vec::new();
    for worker in workers {
        let output = worker.finish(Duration::from_secs(120)).await;
        assert!(
            output.status.success(),
            "worker failed: {:?}",
            output.status
        );
        outputs.push(output);
    }
    outputs
}

async fn two_processes_writing_the_same_aggregates(max_conflict_retries: u32) -> (u64, usize) {
    let Some(database) = fresh_database().await else {
        return (0, 0);
    };
    let seed = seed("two_writers", "WRITERS_SEED");
    let (events, snapshots) = database.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let events: Arc<dyn EventStore> = Arc::new(events);
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(snapshots);

    let started = Instant::now();
    let outputs = race(database.url(), seed, 150, max_conflict_retries).await;
    let acks: Vec<_> = outputs.iter().flat_map(|o| o.acks.clone()).collect();
    let nacks: Vec<_> = outputs.iter().flat_map(|o| o.nacks.clone()).collect();
    let conflicts: u64 = outputs.iter().map(|o| o.stat("conflicts")).sum();

    for (n, output) in outputs.iter().enumerate() {
        assert_eq!(
            output.acks.len() + output.nacks.len(),
            3 * 150,
            "every command answered"
        );
        let stats = output
            .stats
            .as_ref()
            .unwrap_or_else(|| panic!("writer-{n} printed no STATS line"));
        assert!(
            stats.contains_key("conflicts"),
            "writer-{n}'s STATS has no conflicts counter: {stats:?}"
        );
        assert_eq!(output.stat("succeeded"), output.acks.len() as u64);
        // Each executor saw the other one's writes as version conflicts: the loads overlapped
        // on every side, not just one.
        assert!(
            output.stat("conflicts") > 0,
            "writer-{n}'s executor never met a conflict: the test did not exercise concurrency"
        );
        let reported = output
            .nacks
            .iter()
            .filter(|nack| nack.kind == "conflict")
            .count() as u64;
        assert!(
            reported <= output.stat("conflicts"),
            "writer-{n} reported {reported} conflicts but its executor counted fewer"
        );
        if max_conflict_retries == 0 {
            assert_eq!(
                reported,
                output.stat("conflicts"),
                "writer-{n}: with no retries every conflict is reported"
            );
        }
    }
    let unexpected: Vec<_> = nacks
        .iter()
        .filter(|n| n.kind != "rejected" && n.kind != "conflict")
        .collect();
    assert!(unexpected.is_empty(), "unexpected failures: {unexpected:?}");

    let streams = read_all_wallets(&pool, &*events).await.unwrap();
    let report = assert_audit(&acks, &streams);
    // Acknowledged == stored: nothing stored that was not acknowledged (no process died).
    assert_eq!(report.commands_stored, acks.len(), "stored == acknowledged");
    let failed: HashSet<_> = nacks.iter().map(|n| n.command).collect();
    let stored: HashSet<_> = streams
        .values()
        .flatten()
        .map(|s| s.event.command())
        .collect();
    assert!(
        failed.is_disjoint(&stored),
        "a rejected or conflicted command stored events"
    );
    assert!(
        conflicts > 0,
        "the two writers never met: the test did not exercise concurrency"
    );
    let reported_conflicts = nacks.iter().filter(|n| n.kind == "conflict").count();
    let reader = reading_executor(Arc::clone(&events), Arc::clone(&snapshots));
    assert_states_equal_fold(&reader, &streams).await;
    reader.shutdown().await;
    eprintln!(
        "two_writers (max {max_conflict_retries} retries): {} acknowledged and verified, \
         {} rejected, {conflicts} conflicts seen, {reported_conflicts} reported after the \
         retries ran out, {} events; conflicts per writer {:?}; {:.1?}",
        report.acks_verified,
        nacks.iter().filter(|n| n.kind == "rejected").count(),
        report.events,
        outputs
            .iter()
            .map(|o| o.stat("conflicts"))
            .collect::<Vec<_>>(),
        started.elapsed()
    );
    (conflicts, reported_conflicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_the_same_aggregates_retry_conflicts_and_store_exactly_what_they_acknowledge()
 {
    two_processes_writing_the_same_aggregates(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_beyond_the_retry_budget_are_reported_and_store_nothing() {
    let (conflicts, reported) = two_processes_writing_the_same_aggregates(0).await;
    // With no retries allowed, every conflict comes back to the caller as a failed command.
    assert_eq!(reported as u64, conflicts);
}
