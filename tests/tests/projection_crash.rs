//! Exactly-once projections across process crashes (#16): while writer tasks append events to 50
//! streams, a `projection_node` process runs the PostgreSQL projection `stream_totals` (a
//! deliberately non-idempotent handler: `events + 1`, `amount_sum + amount`, in batches of 25,
//! pausing mid-batch with its transaction open) and is killed with SIGKILL at random moments,
//! then started again, again and again: some kills during start-up, some at a random moment
//! under load, some right inside a batch being written. After every kill (its sessions ended),
//! the read model equals an independent fold, with raw SQL and decoding here, of exactly the
//! events at or below the committed checkpoint; after the load stops (it goes on a second past
//! the last kill, a backlog) a last node catches up and the read model equals the fold of every
//! event: no event counted twice or missed.
//!
//! `PROJECTION_CRASH_SEED` replays a run's random moments; `PROJECTION_CRASH_KILLS` sets the
//! number of kills (default 20, at least 10); `make soak` runs the ignored long variant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{EventStore, NewEvent, StoreLimits, StreamId};
use integration_tests::audit::wait_for_sessions_to_end;
use integration_tests::projection_node::{
    Amount, NodeLine, ProjectionNodeArgs, ProjectionNodeProcess, READ_MODEL_DDL, StreamTotals,
    checkpoint, differences, fold_events, head, read_model,
};
use integration_tests::{env_or, seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;

const NODE: &str = env!("CARGO_BIN_EXE_projection_node");
const STREAMS: usize = 50;
const WRITERS: usize = 4;
const BATCH_SIZE: usize = 25;
/// The node's pause in the middle of each batch, transaction open and half the batch written.
const HANDLE_DELAY: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(30);
/// How long the load runs after the last kill, before the last restart.
const BACKLOG_LOAD: Duration = Duration::from_secs(1);
const SIGKILL: i32 = 9;

/// Where a kill is aimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Right after a `HANDLING` line: inside a batch, its transaction open.
    InsideBatch,
    /// A random while after the node committed a batch of its own.
    UnderLoad,
    /// A random while after the start (connecting, installing the trigger, first batches).
    StartUp,
}

/// The kinds of kill in turn; the delays are random.
const MOMENTS: [Moment; 5] = [
    Moment::InsideBatch,
    Moment::UnderLoad,
    Moment::InsideBatch,
    Moment::UnderLoad,
    Moment::StartUp,
];

/// Writer tasks appending events until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    appended: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// `WRITERS` tasks, each owning every `WRITERS`-th of the `STREAMS` streams (no conflicts),
    /// appending 1 to 3 events with random amounts to a random stream of theirs, then pausing
    /// 2 to 14 ms.
    fn start(store: Arc<dyn EventStore>, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let appended = Arc::new(AtomicU64::new(0));
        let tasks = (0..WRITERS)
            .map(|writer| {
                let store = Arc::clone(&store);
                let stop = Arc::clone(&stop);
                let appended = Arc::clone(&appended);
                let mut rng = StdRng::seed_from_u64(seed ^ (writer as u64 + 1));
                tokio::spawn(async move {
                    let streams: Vec<StreamId> = (0..STREAMS)
                        .filter(|s| s % WRITERS == writer)
                        .map(|s| StreamId::new("tally", format!("s{s:02}")).unwrap())
                        .collect();
                    let mut versions = vec![0u64; streams.len()];
                    while !stop.load(Ordering::Relaxed) {
                        let i = rng.random_range(0..streams.len());
                        let count = rng.random_range(1..=3u64);
                        let events = (0..count)
                            .map(|_| {
                                let amount = Amount {
                                    amount: rng.random_range(-1_000..=1_000),
                                };
                                NewEvent::new("Counted", 1, amount.encode())
                            })
                            .collect();
                        let receipt = store
                            .append(&streams[i], versions[i], events)
                            .await
                            .unwrap_or_else(|e| panic!("appending to {}: {e}", streams[i]));
                        versions[i] = receipt.last_version;
                        appended.fetch_add(count, Ordering::Relaxed);
                        let pause = rng.random_range(2..15);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            appended,
            tasks,
        }
    }

    /// Stops the writers; returns the events they appended.
    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            task.await.unwrap();
        }
        self.appended.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    /// On a failed assertion: the writers end before the test database is dropped under them.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The checkpoint, the head of `events`, the read model and the fold of the events at or below
/// the checkpoint, read in one REPEATABLE READ snapshot.
struct Snapshot {
    checkpoint: u64,
    head: u64,
    read_model: BTreeMap<String, StreamTotals>,
    folded: BTreeMap<String, StreamTotals>,
}

impl Snapshot {
    async fn read(url: &str) -> Self {
        let mut conn = PgConnection::connect(url).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await
            .unwrap();
        let checkpoint = checkpoint(&mut tx).await;
        let head = head(&mut tx).await;
        let read_model = read_model(&mut tx).await;
        let folded = fold_events(&mut tx, checkpoint).await;
        tx.commit().await.unwrap();
        conn.close().await.unwrap();
        Self {
            checkpoint,
            head,
            read_model,
            folded,
        }
    }

    /// Panics unless the read model is exactly the fold of the events up to the checkpoint.
    fn assert_exact(&self, when: &str) {
        let differences = differences(&self.read_model, &self.folded, 10);
        assert!(
            differences.is_empty(),
            "{when}: the read model differs from the fold of the {} event(s) at or below its \
             checkpoint {} (events counted twice, half a batch kept, or one missed); first \
             differing streams:\n  {}",
            self.folded.values().map(|t| t.events).sum::<i64>(),
            self.checkpoint,
            differences.join("\n  ")
        );
    }

    fn events_projected(&self) -> i64 {
        self.read_model.values().map(|t| t.events).sum()
    }
}

/// What one kill found.
#[derive(Debug)]
struct Kill {
    moment: Moment,
    /// The node had committed a batch of its own before the kill.
    committed: bool,
    /// The node had started a batch that the kill rolled back.
    inside_batch: bool,
    checkpoint_before: u64,
    checkpoint_after: u64,
    head_at_kill: u64,
}

/// Waits for the moment of the kill.
async fn kill_at(node: &mut ProjectionNodeProcess, moment: Moment, rng: &mut StdRng) {
    match moment {
        Moment::StartUp => {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        }
        Moment::UnderLoad => {
            node.wait_for_a_committed_batch(WAIT).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        }
        Moment::InsideBatch => {
            node.wait_for_a_committed_batch(WAIT).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
            node.wait_for("a batch being handled", WAIT, |line| {
                matches!(line, NodeLine::Handling { .. })
            })
            .await;
            let within = u64::try_from(HANDLE_DELAY.as_millis()).unwrap();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..within))).await;
        }
    }
}

async fn kill_restart_and_compare(kills: usize) {
    let Some(database) = fresh_database().await else {
        return;
    };
    let seed = seed("projection_crash", "PROJECTION_CRASH_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let (events, _) = database.stores(StoreLimits::default()).await.unwrap();
    let pool: PgPool = events.pool().clone();
    sqlx::query(READ_MODEL_DDL).execute(&pool).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(events);
    let url = database.url().to_owned();
    let node_args = |name: String| {
        let mut args = ProjectionNodeArgs::new(url.clone(), name);
        args.batch_size = BATCH_SIZE;
        args.handle_delay = HANDLE_DELAY;
        args
    };

    let started = Instant::now();
    let load = Load::start(Arc::clone(&store), seed);
    // A backlog for the first node to catch up on.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut log: Vec<Kill> = Vec::new();
    let mut checkpoint_before = 0;
    let mut cut_lines = 0;
    for kill in 0..kills {
        let moment = MOMENTS[kill % MOMENTS.len()];
        let name = format!("projection-{}-{kill}", database.name());
        let mut node = ProjectionNodeProcess::spawn(NODE, &node_args(name.clone())).unwrap();
        kill_at(&mut node, moment, &mut rng).await;
        let output = node.kill().await;
        assert_eq!(
            output.status.signal(),
            Some(SIGKILL),
            "kill {kill}: the node ended by itself ({:?}) instead of by SIGKILL",
            output.status
        );
        cut_lines += usize::from(output.cut_line);
        // A statement the node sent before dying may still commit: wait for its sessions.
        wait_for_sessions_to_end(&pool, &name).await;

        let snapshot = Snapshot::read(&url).await;
        snapshot.assert_exact(&format!("after kill {kill} ({moment:?})"));
        let checkpoint_after = snapshot.checkpoint;
        assert!(
            checkpoint_after >= checkpoint_before,
            "kill {kill}: the checkpoint went back from {checkpoint_before} to {checkpoint_after}"
        );
        // The last checkpoint this run reported committing, if it committed a batch.
        let committed = output
            .last_at()
            .filter(|&(_, _, batches, _)| batches > 0)
            .map(|(position, ..)| position);
        if let Some(position) = committed {
            assert!(
                checkpoint_after >= position && checkpoint_after > checkpoint_before,
                "kill {kill}: the node reported committing up to {position}, yet the checkpoint \
                 is {checkpoint_after} (it was {checkpoint_before} before this run)"
            );
        }
        let inside_batch = output
            .last_handling()
            .is_some_and(|(_, last)| last > checkpoint_after);
        log.push(Kill {
            moment,
            committed: committed.is_some(),
            inside_batch,
            checkpoint_before,
            checkpoint_after,
            head_at_kill: snapshot.head,
        });
        checkpoint_before = checkpoint_after;
    }

    // The load goes on a while with no node running: a backlog for the last restart.
    tokio::time::sleep(BACKLOG_LOAD).await;
    let appended = load.stop().await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let final_head = head(&mut conn).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        stored,
        i64::try_from(appended).unwrap(),
        "every append was stored"
    );
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position > $1")
        .bind(i64::try_from(checkpoint_before).unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();

    // The last restart, after the load: it must catch up with everything.
    let name = format!("projection-{}-final", database.name());
    let restarted = Instant::now();
    let mut node = ProjectionNodeProcess::spawn(NODE, &node_args(name.clone())).unwrap();
    node.wait_for("READY", WAIT, |line| matches!(line, NodeLine::Ready(_)))
        .await;
    let caught_up = loop {
        if checkpoint(&mut conn).await >= final_head {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "the last node did not catch up with position {final_head} within 60 s (at {})",
            checkpoint(&mut conn).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let output = node.kill().await;
    let (_, final_handled, final_batches, _) = output.last_at().unwrap_or_default();
    wait_for_sessions_to_end(&pool, &name).await;
    conn.close().await.unwrap();

    let last = Snapshot::read(&url).await;
    assert_eq!(
        last.checkpoint, final_head,
        "the checkpoint is at the last event"
    );
    last.assert_exact("after the load and the last restart");
    assert_eq!(
        last.folded.len(),
        STREAMS,
        "every stream is in the fold of the events"
    );
    let projected = last.events_projected();
    assert_eq!(
        projected,
        i64::try_from(appended).unwrap(),
        "every appended event counted once"
    );

    let committed = log.iter().filter(|k| k.committed).count();
    let advanced = log
        .iter()
        .filter(|k| k.checkpoint_after > k.checkpoint_before)
        .count();
    let behind = log
        .iter()
        .filter(|k| k.checkpoint_after < k.head_at_kill)
        .count();
    let inside = log.iter().filter(|k| k.inside_batch).count();
    let aimed_inside = log
        .iter()
        .filter(|k| k.moment == Moment::InsideBatch)
        .count();
    let at_start_up = log.iter().filter(|k| k.moment == Moment::StartUp).count();
    eprintln!(
        "projection_crash: {kills} SIGKILLs of the projection node ({at_start_up} aimed at \
         start-up, {aimed_inside} aimed inside a batch); {inside} landed inside a batch (its \
         writes rolled back), {committed} after the run had committed a batch, the checkpoint \
         advanced between {advanced} consecutive kills and was behind the head of the events \
         at {behind} kills; {cut_lines} output line(s) cut short"
    );
    eprintln!(
        "projection_crash: {appended} events appended to {STREAMS} streams, {projected} \
         projected exactly once (read model = fold of the events); the last restart caught up \
         with a backlog of {backlog} events in {caught_up:.2?} ({final_handled} events in \
         {final_batches} batches); whole run {:.1?}",
        started.elapsed()
    );
    eprintln!(
        "projection_crash: checkpoints after each kill: {:?}; heads: {:?}",
        log.iter().map(|k| k.checkpoint_after).collect::<Vec<_>>(),
        log.iter().map(|k| k.head_at_kill).collect::<Vec<_>>()
    );

    assert!(
        committed * 2 >= kills && advanced >= committed,
        "most kills land after the node made progress, and the checkpoint advanced between \
         them ({committed} kills after a committed batch, {advanced} advances, of {kills})"
    );
    assert!(
        behind * 2 >= kills,
        "most kills land while events are still to be projected ({behind} of {kills})"
    );
    assert!(
        inside >= 1 && inside * 4 >= aimed_inside,
        "kills land inside a batch being written ({inside}, {aimed_inside} aimed there)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_projection_counts_every_event_exactly_once_in_its_postgres_read_model() {
    kill_restart_and_compare(env_or("PROJECTION_CRASH_KILLS", 20usize).max(10)).await;
}

/// `make soak`: two hundred kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run with `make soak` or --ignored"]
async fn soak_a_projection_sigkilled_200_times_counts_every_event_exactly_once() {
    kill_restart_and_compare(env_or("PROJECTION_CRASH_KILLS", 200usize)).await;
}
