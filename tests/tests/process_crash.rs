//! Invariant 2 across process crashes: a worker process runs a command load on PostgreSQL and
//! is killed with SIGKILL at random moments, then restarted, again and again. After every kill
//! every acknowledged command's events are stored exactly once and whole, versions are
//! contiguous, and the state a fresh executor serves equals the fold of the stored events.
//!
//! `CRASH_SEED` replays a run; `CRASH_KILLS` sets the number of kills (default 20);
//! `make soak` runs the ignored long variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{EventStore, SnapshotStore, StoreLimits};
use integration_tests::audit::{
    assert_audit, assert_states_equal_fold, read_all_wallets, wait_for_sessions_to_end,
};
use integration_tests::worker::{Ack, WorkerArgs, WorkerProcess};
use integration_tests::{env_or, reading_executor, seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORKER: &str = env!("CARGO_BIN_EXE_ledger_worker");

async fn kill_restart_and_verify(kills: usize) {
    let Some(database) = fresh_database().await else {
        return;
    };
    let seed = seed("process_crash", "CRASH_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let (events, snapshots) = database.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let events: Arc<dyn EventStore> = Arc::new(events);
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(snapshots);

    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut cut_lines = 0;
    let mut kills_mid_load = 0;
    let mut kills_in_startup = 0;
    for kill in 0..kills {
        let mut args = WorkerArgs::new(database.url());
        args.name = format!("crash-worker-{kill}");
        args.prefix = "crash".into();
        args.ids = 6;
        args.tasks = 4;
        args.seed = rng.random();
        // Often enough that kills land in snapshot writes too.
        args.snapshot_every = rng.random_range(2..=6);
        let mut worker = WorkerProcess::spawn(WORKER, &args).unwrap();
        // Sometimes during start-up (connecting, migrating), mostly under load.
        let delay = if rng.random_ratio(1, 5) {
            Duration::from_millis(rng.random_range(0..60))
        } else {
            worker.wait_ready(Duration::from_secs(30)).await;
            Duration::from_millis(rng.random_range(20..400))
        };
        tokio::time::sleep(delay).await;
        if worker.acks_so_far() > 0 {
            kills_mid_load += 1;
        } else if !worker.is_ready() {
            kills_in_startup += 1;
        }
        let output = worker.kill().await;
        assert!(
            !output.status.success(),
            "kill {kill}: the worker ended by itself ({:?}) instead of being killed",
            output.status
        );
        assert!(
            output.stats.is_none(),
            "kill {kill}: the worker finished its load before the kill"
        );
        cut_lines += usize::from(output.cut_line);
        acks.extend(output.acks);
        // A statement the worker sent before dying may still commit: wait for its sessions.
        wait_for_sessions_to_end(&pool, &args.name).await;

        // What survived the crash, checked before the next worker writes anything.
        let streams = read_all_wallets(&pool, &*events).await.unwrap();
        let report = assert_audit(&acks, &streams);
        let reader = reading_executor(Arc::clone(&events), Arc::clone(&snapshots));
        assert_states_equal_fold(&reader, &streams).await;
        reader.shutdown().await;
        assert_eq!(report.acks_verified, acks.len());
    }

    // A last worker that runs to the end on whatever the crashes left behind.
    let mut args = WorkerArgs::new(database.url());
    args.prefix = "crash".into();
    args.ids = 6;
    args.commands = 25;
    args.seed = rng.random();
    let output = WorkerProcess::spawn(WORKER, &args)
        .unwrap()
        .finish(Duration::from_secs(120))
        .await;
    assert!(output.status.success(), "final worker: {:?}", output.status);
    assert!(
        output.nacks.iter().all(|n| n.kind == "rejected"),
        "after the crashes every command works: {:?}",
        output.nacks
    );
    acks.extend(output.acks);
    let streams = read_all_wallets(&pool, &*events).await.unwrap();
    let report = assert_audit(&acks, &streams);
    let reader = reading_executor(Arc::clone(&events), Arc::clone(&snapshots));
    assert_states_equal_fold(&reader, &streams).await;
    let skipped = reader
        .stats_of::<integration_tests::wallet::Wallet>()
        .unwrap()
        .aggregate
        .snapshots_skipped_invalid;
    reader.shutdown().await;
    assert_eq!(
        skipped, 0,
        "a crash never leaves an invalid snapshot behind"
    );
    assert!(
        kills_mid_load * 2 >= kills,
        "most kills must land under load ({kills_mid_load} of {kills})"
    );
    eprintln!(
        "process_crash: {kills} kills survived ({kills_mid_load} under load, {kills_in_startup} \
         during start-up, {cut_lines} cutting a line short); {} commands acknowledged and verified; {} events in {} streams; {:.1?}",
        report.acks_verified,
        report.events,
        report.streams,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_command_survives_repeated_sigkill_exactly_once() {
    kill_restart_and_verify(env_or("CRASH_KILLS", 20usize).max(20)).await;
}

/// `make soak`: ten times the kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run with `make soak` or --ignored"]
async fn soak_every_acknowledged_command_survives_200_sigkills_exactly_once() {
    kill_restart_and_verify(env_or("CRASH_KILLS", 200usize)).await;
}
