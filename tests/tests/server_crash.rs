//! Acknowledged means durable, across crashes of the database server itself: a PostgreSQL
//! cluster this test owns runs with `fsync`, `synchronous_commit` and `full_page_writes` on, a
//! command load runs against it (every command with its own command id, retried with that same
//! id after an indeterminate or retryable outcome), and the postmaster is SIGKILLed at random
//! moments — alone, or together with its backends so that commits in flight are cut — then
//! started again (crash recovery from the WAL). After every restart, and at the
//! end, raw SQL shows every acknowledged command stored exactly once, whole, at the acknowledged
//! versions, no command id twice and contiguous versions; at the end the state a fresh executor
//! serves equals the fold of the stored events.
//!
//! `SERVER_CRASH_SEED` replays a run's random moments; `SERVER_CRASH_KILLS` sets the number of
//! kills (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::testing::in_ci;
use aggregate_actors::event_stores::{EventStore, PgConfig, PgEventStore, PgSnapshotStore};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{
    AggregateSettings, CommandError, CommandId, CommandOptions, Executor, RuntimeConfig, codec,
};
use integration_tests::audit::{StoredEvent, assert_audit, assert_states_equal_fold};
use integration_tests::cluster::{NoCluster, PgCluster};
use integration_tests::wallet::{Wallet, WalletCommand, WalletEvent};
use integration_tests::worker::Ack;
use integration_tests::{env_or, reading_executor, seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::sync::Mutex;
use uuid::Uuid;

const TASKS: usize = 4;
const WARM_WALLETS: usize = 10;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a command may stay unresolved (retried through outages) before the test fails.
const RESOLVE_WITHIN: Duration = Duration::from_secs(40);

/// An acknowledged command and when its acknowledgement arrived.
#[derive(Debug, Clone)]
struct Acked {
    ack: Ack,
    at: Instant,
    /// An earlier attempt of this command id was indeterminate.
    after_indeterminate: bool,
    /// The acknowledgement was a duplicate (the command had been stored by an earlier attempt).
    duplicate: bool,
}

/// What the load saw.
#[derive(Default)]
struct Log {
    acks: Vec<Acked>,
    /// Indeterminate outcomes (each attempt counts).
    indeterminate: usize,
    /// Retryable not-stored outcomes (each attempt counts).
    not_stored: usize,
    /// Commands rejected by the wallet (nothing stored).
    rejected: usize,
    /// When a failed attempt ended.
    failures_at: Vec<Instant>,
}

fn command_for(rng: &mut StdRng) -> WalletCommand {
    match rng.random_range(0..10) {
        0..=5 => WalletCommand::deposit(rng.random_range(1..20)),
        6..=7 => WalletCommand::withdraw(rng.random_range(1..15)),
        _ => WalletCommand::split(vec![rng.random_range(1..9), rng.random_range(1..9)]),
    }
}

/// Sends commands until `stop`; each command is retried with its own command id until it has
/// an answer that settles it (acknowledged or rejected).
async fn load(
    executor: Executor,
    task: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(task as u64));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = if n.is_multiple_of(15) {
            format!("cold-{task}-{n}")
        } else {
            format!("warm-{}", rng.random_range(0..WARM_WALLETS))
        };
        let command = command_for(&mut rng);
        let uuid = command.id().unwrap();
        let amount = command.net_amount();
        let first_sent = Instant::now();
        let mut after_indeterminate = false;
        loop {
            let options = CommandOptions::new().command_id(CommandId::from(uuid));
            let result = executor
                .execute_with::<Wallet>(&id, command.clone(), options)
                .await;
            let mut log = log.lock().await;
            match result {
                Ok(done) => {
                    assert_eq!(done.command_id, CommandId::from(uuid));
                    assert!(
                        !done.duplicate || after_indeterminate,
                        "{id}: command {uuid} answered as a duplicate though no earlier attempt \
                         could have stored it"
                    );
                    log.acks.push(Acked {
                        ack: Ack {
                            id: id.clone(),
                            version: done.version,
                            amount,
                            command: uuid,
                            events: done.events.len() as u32,
                        },
                        at: Instant::now(),
                        after_indeterminate,
                        duplicate: done.duplicate,
                    });
                    break;
                }
                Err(CommandError::Rejected(_)) => {
                    log.rejected += 1;
                    break;
                }
                Err(error) => {
                    assert!(
                        error.is_retryable(),
                        "{id}: a server crash gives retryable or indeterminate outcomes, got: \
                         {error:?}"
                    );
                    if error.is_indeterminate() {
                        log.indeterminate += 1;
                        after_indeterminate = true;
                    } else {
                        log.not_stored += 1;
                    }
                    log.failures_at.push(Instant::now());
                    drop(log);
                    assert!(
                        first_sent.elapsed() < RESOLVE_WITHIN,
                        "{id}: command {uuid} still unresolved after {RESOLVE_WITHIN:?}: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(rng.random_range(20..80))).await;
                }
            }
        }
    }
}

/// `aggregate_id, version, event_id, command_id, payload` of one stored event.
type EventRow = (String, i64, Uuid, Option<Uuid>, Vec<u8>);

/// Every wallet event in the database, read with raw SQL on a connection of its own, decoded
/// and checked: versions 1, 2, 3 … per stream, the `command_id` column equal to the command id
/// the payload carries.
async fn read_raw(url: &str) -> BTreeMap<String, Vec<(StoredEvent, Uuid)>> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT aggregate_id, version, event_id, command_id, payload FROM events \
         WHERE aggregate_type = 'wallet' ORDER BY aggregate_id, version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let mut streams: BTreeMap<String, Vec<(StoredEvent, Uuid)>> = BTreeMap::new();
    for (id, version, event_id, command_id, payload) in rows {
        let event: WalletEvent = codec::decode(&payload)
            .unwrap_or_else(|e| panic!("{id}: event {version} does not decode: {e}"));
        let command_id =
            command_id.unwrap_or_else(|| panic!("{id}: event {version} has no command_id"));
        assert_eq!(
            command_id,
            event.command(),
            "{id}: event {version} is stored under another command id than its own"
        );
        let stream = streams.entry(id.clone()).or_default();
        assert_eq!(
            version,
            stream.len() as i64 + 1,
            "{id}: version {version} where {} was expected (gap or duplicate)",
            stream.len() + 1
        );
        stream.push((
            StoredEvent {
                version: version as u64,
                event_id,
                event,
            },
            command_id,
        ));
    }
    streams
}

/// Checks the raw rows against the acknowledgements: every acknowledged command is stored in
/// its stream with exactly the acknowledged number of events, ending at the acknowledged
/// version; no command id is stored in two places or more times than its events say. With
/// `complete`, every stored command was acknowledged too. Returns the streams decoded.
async fn audit_raw(
    url: &str,
    acks: &[Acked],
    complete: bool,
) -> BTreeMap<String, Vec<StoredEvent>> {
    let streams = read_raw(url).await;
    // command id → (stream, versions, parts declared)
    let mut stored: HashMap<Uuid, (String, Vec<u64>, u32)> = HashMap::new();
    for (id, events) in &streams {
        for (event, command_id) in events {
            let entry = stored
                .entry(*command_id)
                .or_insert_with(|| (id.clone(), Vec::new(), event.event.part().1));
            assert_eq!(
                &entry.0, id,
                "command {command_id} is stored in two streams: {} and {id}",
                entry.0
            );
            entry.1.push(event.version);
        }
    }
    for (command_id, (id, versions, parts)) in &stored {
        let consecutive = versions.windows(2).all(|w| w[1] == w[0] + 1);
        assert!(
            consecutive && versions.len() == *parts as usize,
            "{id}: command {command_id} is stored more than once or partially: versions \
             {versions:?}, {parts} event(s) per copy"
        );
    }
    let mut acked = HashMap::new();
    for acked_command in acks {
        let ack = &acked_command.ack;
        assert!(
            acked.insert(ack.command, ()).is_none(),
            "command {} acknowledged twice",
            ack.command
        );
        let (id, versions, _) = stored.get(&ack.command).unwrap_or_else(|| {
            panic!(
                "{}: acknowledged command {} (version {}, {} event(s)) is not stored: an \
                 acknowledged commit was lost in the server crash",
                ack.id, ack.command, ack.version, ack.events
            )
        });
        let expected: Vec<u64> = (ack.version + 1 - u64::from(ack.events)..=ack.version).collect();
        assert!(
            *id == ack.id && *versions == expected,
            "{ack:?} acknowledged but stored in {id} at versions {versions:?}"
        );
    }
    if complete {
        for (command_id, (id, versions, _)) in &stored {
            assert!(
                acked.contains_key(command_id),
                "{id}: command {command_id} stored at {versions:?} but never acknowledged \
                 though every command was retried until settled"
            );
        }
    }
    streams
        .into_iter()
        .map(|(id, events)| (id, events.into_iter().map(|(e, _)| e).collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commands_survive_repeated_postmaster_sigkills_exactly_once() {
    let cluster = match tokio::task::spawn_blocking(PgCluster::start_durable)
        .await
        .unwrap()
    {
        Ok(cluster) => Arc::new(cluster),
        Err(NoCluster::NoBinaries(message)) => {
            assert!(
                !in_ci(),
                "CI=true and no PostgreSQL binaries for the server crash test: {message}"
            );
            eprintln!("SKIPPED: the server crash test needs PostgreSQL binaries: {message}");
            return;
        }
    };
    let seed = seed("server_crash", "SERVER_CRASH_SEED");
    let kills: usize = env_or("SERVER_CRASH_KILLS", 5);
    let mut rng = StdRng::seed_from_u64(seed);
    let url = cluster.url().to_owned();

    let config = PgConfig::new(&url)
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(10))
        .application_name("server-crash-test")
        .require_durability(true);
    let events = PgEventStore::connect(&config)
        .await
        .expect("a server with fsync, synchronous_commit and full_page_writes on is accepted");
    let durability = events.server_durability().unwrap().clone();
    assert!(
        durability.survives_server_crash(),
        "the cluster runs with crash-safe settings: {durability}"
    );
    let pool = events.pool().clone();
    let snapshots = PgSnapshotStore::with_migrated_pool(pool.clone(), config.limits);
    let events: Arc<dyn EventStore> = Arc::new(events);
    let snapshots: Arc<dyn aggregate_actors::event_stores::SnapshotStore> = Arc::new(snapshots);
    let executor = Executor::builder(Arc::clone(&events), Arc::clone(&snapshots))
        .register::<Wallet>(
            AggregateSettings::new()
                .strategy(EveryNEvents::new(7))
                .runtime(RuntimeConfig {
                    call_timeout: CALL_TIMEOUT,
                    ..RuntimeConfig::default()
                }),
        )
        .build()
        .unwrap();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(load(
                executor.clone(),
                task,
                seed,
                Arc::clone(&stop),
                Arc::clone(&log),
            ))
        })
        .collect();

    let mut up_since = Instant::now();
    let mut acks_between_kills = Vec::new();
    let mut recoveries = Vec::new();
    for kill in 0..kills {
        // Let the load run a random while, and at least until it has been acknowledged again.
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_200))).await;
        let wait_from = Instant::now();
        let acked_since = loop {
            let n = log
                .lock()
                .await
                .acks
                .iter()
                .filter(|a| a.at >= up_since)
                .count();
            if n > 0 {
                break n;
            }
            assert!(
                wait_from.elapsed() < Duration::from_secs(20),
                "kill {kill}: no command acknowledged within 20 s of the restart"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        acks_between_kills.push(acked_since);
        let killed_at = Instant::now();
        let c = Arc::clone(&cluster);
        // Odd kills: the postmaster alone (its backends finish what they run, then exit);
        // even kills: the postmaster and every backend at once (commits in flight are cut).
        let whole_server = kill % 2 == 1;
        let crashed = tokio::task::spawn_blocking(move || {
            if whole_server {
                c.kill_postmaster_and_backends()
            } else {
                c.kill_postmaster()
            }
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        let c = Arc::clone(&cluster);
        let restart = tokio::task::spawn_blocking(move || c.start_server_after_crash(&crashed))
            .await
            .unwrap();
        up_since = Instant::now();

        // Acknowledged before the crash ⇒ stored after recovery.
        let before_kill: Vec<Acked> = log
            .lock()
            .await
            .acks
            .iter()
            .filter(|a| a.at <= killed_at)
            .cloned()
            .collect();
        audit_raw(&url, &before_kill, false).await;

        let first_ack = loop {
            let first = log
                .lock()
                .await
                .acks
                .iter()
                .filter(|a| a.at >= up_since)
                .map(|a| a.at)
                .min();
            if let Some(at) = first {
                break at;
            }
            assert!(
                up_since.elapsed() < Duration::from_secs(20),
                "kill {kill}: the executor did not serve again within 20 s of the restart"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        recoveries.push((
            whole_server,
            up_since - killed_at,
            restart,
            first_ack - up_since,
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let log = std::mem::take(&mut *log.lock().await);
    let streams = audit_raw(&url, &log.acks, true).await;
    let acks: Vec<Ack> = log.acks.iter().map(|a| a.ack.clone()).collect();
    let report = assert_audit(&acks, &streams);
    assert_states_equal_fold(&executor, &streams).await;
    let reader = reading_executor(Arc::clone(&events), Arc::clone(&snapshots));
    assert_states_equal_fold(&reader, &streams).await;
    reader.shutdown().await;
    let stats = executor.stats_of::<Wallet>().unwrap().aggregate;
    executor.shutdown().await;

    let resolved: Vec<&Acked> = log.acks.iter().filter(|a| a.after_indeterminate).collect();
    let committed = resolved.iter().filter(|a| a.duplicate).count();
    let failures_after_kills = log.failures_at.len();
    eprintln!(
        "server_crash: {kills} postmaster SIGKILLs in {:.1?}; {} commands acknowledged ({} \
         events in {} streams, verified by raw SQL after every restart), {} rejected; \
         {} indeterminate outcomes, {} not-stored retryable; {} commands retried after an \
         indeterminate outcome: {} had committed (answered as duplicates), {} had not (applied \
         by the retry); acks between kills {:?}; executor: {} duplicates, {} indeterminate, \
         {} snapshots taken, {} failed",
        started.elapsed(),
        report.acks_verified,
        report.events,
        report.streams,
        log.rejected,
        log.indeterminate,
        log.not_stored,
        resolved.len(),
        committed,
        resolved.len() - committed,
        acks_between_kills,
        stats.commands_duplicate,
        stats.commands_indeterminate,
        stats.snapshots_taken,
        stats.snapshots_failed,
    );
    for (kill, (whole_server, down, restart, first_ack)) in recoveries.iter().enumerate() {
        eprintln!(
            "server_crash: kill {} ({}): server down {down:.2?} (pg_ctl start with crash recovery \
             {:.2?}{}), first acknowledgement {first_ack:.2?} after the restart",
            kill + 1,
            if *whole_server {
                "postmaster and backends"
            } else {
                "postmaster"
            },
            restart.took,
            if restart.removed_stale_lock {
                format!(
                    "; after a start refused in {:.2?} because of the zombie postmaster's \
                     stale lock files, removed",
                    restart.refused_for
                )
            } else {
                String::new()
            }
        );
    }
    let recoveries_logged = cluster
        .server_log()
        .matches("database system was interrupted")
        .count();
    assert!(
        recoveries_logged >= kills,
        "every restart ran crash recovery: the server log shows {recoveries_logged} for {kills} kills"
    );
    assert!(kills >= 5, "at least five server crashes per run");
    assert!(
        acks_between_kills.len() == kills && acks_between_kills.iter().all(|&n| n > 0),
        "every kill landed under load: commands were acknowledged before each ({acks_between_kills:?})"
    );
    assert!(
        failures_after_kills > 0,
        "the load saw the crashes (no attempt failed)"
    );
    assert_eq!(report.acks_verified, log.acks.len());
}
