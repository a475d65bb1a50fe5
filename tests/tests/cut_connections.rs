//! Connections to PostgreSQL cut at random, hundreds of times, under concurrent load: the
//! executor talks to the server through a fault proxy that drops requests before the server
//! sees them, forwards them and drops the answer, or drops the server's answer after it
//! committed. Every caller retries every failure that is not a rejection with the same command
//! id until it is acknowledged. Audited with raw SQL on a direct connection afterwards, every
//! acknowledged command is stored exactly once, nothing unacknowledged is stored, every stream
//! is contiguous, some outcomes were indeterminate and some of those had in fact committed (the
//! retry was answered as a duplicate), and a fresh executor serves the fold of what is stored.
//!
//! The store runs with its defaults, so group commit is on: concurrent appends share statements,
//! and a cut after a batch was sent leaves every append of the batch indeterminate at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::codec;
use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{
    EventStore, PgConfig, PgEventStore, PgSnapshotStore, SnapshotStore, StoreLimits,
};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{
    AggregateSettings, CommandError, CommandId, CommandOptions, Executor, RuntimeConfig,
};
use integration_tests::audit::{StoredEvent, assert_audit, assert_states_equal_fold};
use integration_tests::proxy::FaultProxy;
use integration_tests::proxy::server_addr;
use integration_tests::wallet::{Wallet, WalletCommand, WalletEvent, fold};
use integration_tests::worker::Ack;
use integration_tests::{env_or, reading_executor, seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPool;
use uuid::Uuid;

const WALLETS: usize = 16;
const CALLERS: u64 = 8;
/// Attempts per command before the test gives up on it.
const MAX_ATTEMPTS: u32 = 60;
/// Cuts a run must reach to count as a fault test.
const MIN_CUTS: u64 = 200;

/// What one caller did.
#[derive(Default)]
struct CallerReport {
    acks: Vec<Ack>,
    /// Failed attempts that were retried.
    retries: u64,
    /// Attempts answered `NotStored`.
    not_stored: u64,
    /// Attempts answered `Indeterminate`.
    indeterminate: u64,
    /// Commands with at least one indeterminate attempt.
    indeterminate_commands: u64,
    /// Of those, the ones whose retry was answered as a duplicate: they had committed.
    committed_unseen: u64,
}

/// Sends `commands` deposits, each with its own fixed command id, to wallets picked at random,
/// retrying each until it is acknowledged.
async fn caller(executor: Executor, seed: u64, caller: u64, commands: u64) -> CallerReport {
    let mut rng = StdRng::seed_from_u64(seed ^ caller.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut report = CallerReport::default();
    for k in 0..commands {
        let wallet = format!("wallet-{}", rng.random_range(0..WALLETS));
        let amount = rng.random_range(1..=100);
        let id = CommandId::from_key(&format!("cut-connections/{seed}/{caller}/{k}"));
        let command = WalletCommand::Deposit {
            command: id.as_uuid(),
            amount,
        };
        let mut indeterminate_seen = false;
        let mut last_error = String::new();
        let mut attempt = 0;
        let committed = loop {
            attempt += 1;
            assert!(
                attempt <= MAX_ATTEMPTS,
                "command {id} on {wallet}: not acknowledged after {MAX_ATTEMPTS} attempts; last error: {last_error}"
            );
            let options = CommandOptions::new().command_id(id);
            match executor
                .execute_with::<Wallet>(&wallet, command.clone(), options)
                .await
            {
                Ok(committed) => break committed,
                Err(CommandError::Rejected(e)) => panic!("{wallet}: a deposit was rejected: {e}"),
                Err(CommandError::Indeterminate(outcome)) => {
                    assert_eq!(
                        outcome.command_id, id,
                        "indeterminate names another command"
                    );
                    report.indeterminate += 1;
                    indeterminate_seen = true;
                    last_error = outcome.to_string();
                }
                Err(CommandError::NotStored(error)) => {
                    assert!(
                        error.is_retryable(),
                        "{wallet}: a cut connection must give a retryable error, got: {error}"
                    );
                    report.not_stored += 1;
                    last_error = error.to_string();
                }
            }
            report.retries += 1;
            tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 5)).await;
        };
        assert_eq!(committed.command_id, id);
        let expected = vec![WalletEvent::Deposited {
            command: id.as_uuid(),
            part: 0,
            parts: 1,
            amount,
        }];
        assert_eq!(
            committed.events, expected,
            "{wallet}: command {id} acknowledged with other events (duplicate: {})",
            committed.duplicate
        );
        if indeterminate_seen {
            report.indeterminate_commands += 1;
        }
        if committed.duplicate {
            assert!(
                indeterminate_seen,
                "{wallet}: command {id} was answered as a duplicate (already stored) although \
                 every earlier attempt was answered NotStored: a NotStored answer for a stored \
                 command"
            );
            report.committed_unseen += 1;
        }
        report.acks.push(Ack {
            id: wallet,
            version: committed.version,
            amount,
            command: id.as_uuid(),
            events: committed.events.len() as u32,
        });
    }
    report
}

/// Every wallet stream, read with raw SQL (not through the framework's read path) and decoded.
async fn streams_by_sql(pool: &PgPool) -> BTreeMap<String, Vec<StoredEvent>> {
    let rows: Vec<(String, i64, Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT aggregate_id, version, event_id, payload FROM events \
         WHERE aggregate_type = 'wallet' ORDER BY aggregate_id, version",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut streams: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
    for (id, version, event_id, payload) in rows {
        let event = codec::decode::<WalletEvent>(&payload)
            .unwrap_or_else(|e| panic!("{id}: event {version} does not decode: {e}"));
        streams.entry(id).or_default().push(StoredEvent {
            version: version as u64,
            event_id,
            event,
        });
    }
    streams
}

/// Raw-SQL audit of the `events` table against the acknowledgements; panics on any problem.
async fn audit_by_sql(pool: &PgPool, acks: &[Ack]) {
    let other: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type <> 'wallet'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(other, 0, "events of another aggregate type are stored");

    // Versions per stream: exactly 1..n, no gap, no duplicate.
    let broken: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT aggregate_id, version, n FROM ( \
             SELECT aggregate_id, version, \
                    row_number() OVER (PARTITION BY aggregate_id ORDER BY version) AS n \
             FROM events) numbered \
         WHERE version <> n LIMIT 20",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        broken.is_empty(),
        "streams with a gap or a duplicate version (stream, version, position): {broken:?}"
    );

    // Events per command id.
    let rows: Vec<(Option<Uuid>, i64, i64, String)> = sqlx::query_as(
        "SELECT command_id, count(*), count(DISTINCT aggregate_id), min(aggregate_id) \
         FROM events GROUP BY command_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut stored: HashMap<Uuid, (i64, String)> = HashMap::new();
    for (command, events, streams, stream) in rows {
        let command =
            command.unwrap_or_else(|| panic!("{events} event(s) stored without a command id"));
        assert_eq!(streams, 1, "command {command} stored in {streams} streams");
        stored.insert(command, (events, stream));
    }
    let mut acked = HashMap::new();
    for ack in acks {
        assert!(
            acked.insert(ack.command, ack).is_none(),
            "command {} acknowledged twice",
            ack.command
        );
        let Some((events, stream)) = stored.get(&ack.command) else {
            panic!(
                "acknowledged command {} ({}) is not stored",
                ack.command, ack.id
            );
        };
        assert_eq!(
            (*events, stream.as_str()),
            (i64::from(ack.events), ack.id.as_str()),
            "command {}: (events stored, stream) differ from the acknowledgement",
            ack.command
        );
    }
    let unacknowledged: Vec<&Uuid> = stored.keys().filter(|c| !acked.contains_key(c)).collect();
    assert!(
        unacknowledged.is_empty(),
        "{} stored command(s) were never acknowledged: {:?}",
        unacknowledged.len(),
        unacknowledged.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(
        stored.len(),
        acks.len(),
        "distinct stored command ids ≠ acknowledgements"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_retried_with_their_id_through_hundreds_of_cut_connections_are_stored_exactly_once()
 {
    let Some(database) = fresh_database().await else {
        return;
    };
    let seed = seed("cut_connections", "CUT_CONNECTIONS_SEED");
    // Group commit sends several appends per statement, so fewer statements (and chunks to
    // cut) than commands: enough commands for MIN_CUTS.
    let commands: u64 = env_or("CUT_CONNECTIONS_COMMANDS", 250);
    let server_to_client: f64 = env_or("CUT_CONNECTIONS_S2C", 0.06);
    let client_to_server: f64 = env_or("CUT_CONNECTIONS_C2S", 0.06);

    // The direct stores migrate the schema and serve the audit.
    let (direct_events, direct_snapshots) = database.stores(StoreLimits::default()).await.unwrap();
    let pool = direct_events.pool().clone();
    let direct_events: Arc<dyn EventStore> = Arc::new(direct_events);
    let direct_snapshots: Arc<dyn SnapshotStore> = Arc::new(direct_snapshots);

    let proxy = FaultProxy::start_seeded(server_addr(database.url()), seed);
    let config = PgConfig::new(proxy.url_for(database.url()))
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(5))
        .with_client_timeout(Duration::from_secs(2))
        .run_migrations(false)
        .application_name("cut-connections");
    let events = PgEventStore::connect(&config).await.unwrap();
    let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), config.limits);
    let executor = Executor::builder(Arc::new(events), Arc::new(snapshots))
        .register::<Wallet>(
            AggregateSettings::new()
                .strategy(EveryNEvents::new(3))
                .runtime(RuntimeConfig {
                    call_timeout: Duration::from_secs(10),
                    ..RuntimeConfig::default()
                }),
        )
        .build()
        .unwrap();

    proxy.set_skip_first_chunks(2);
    proxy.set_cut_probability(server_to_client, client_to_server);
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| tokio::spawn(caller(executor.clone(), seed, c, commands)))
        .collect();
    let mut reports = Vec::new();
    for task in callers {
        reports.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    proxy.set_cut_probability(0.0, 0.0);
    let stats = proxy.stats();
    let aggregate = executor.stats_of::<Wallet>().unwrap().aggregate;
    executor.shutdown().await;

    let acks: Vec<Ack> = reports.iter().flat_map(|r| r.acks.clone()).collect();
    let sum = |f: fn(&CallerReport) -> u64| reports.iter().map(f).sum::<u64>();
    let (retries, not_stored, indeterminate, indeterminate_commands, committed_unseen) = (
        sum(|r| r.retries),
        sum(|r| r.not_stored),
        sum(|r| r.indeterminate),
        sum(|r| r.indeterminate_commands),
        sum(|r| r.committed_unseen),
    );
    let cuts = stats.cuts;
    eprintln!(
        "cut_connections: seed {seed}, cut probability s2c {server_to_client} c2s \
         {client_to_server}: {} cuts (after server answer {}, before forward {}, after forward \
         {}) over {} connections; {} commands acknowledged, {retries} retries ({not_stored} not \
         stored, {indeterminate} indeterminate on {indeterminate_commands} commands, \
         {committed_unseen} of those had in fact committed); executor: {} succeeded, {} \
         duplicates, {} failed, {} indeterminate, {} snapshots taken, {} snapshots failed; \
         {elapsed:.1?}",
        cuts.total(),
        cuts.after_server_answer,
        cuts.before_forward,
        cuts.after_forward,
        stats.connections,
        acks.len(),
        aggregate.commands_succeeded,
        aggregate.commands_duplicate,
        aggregate.commands_failed,
        aggregate.commands_indeterminate,
        aggregate.snapshots_taken,
        aggregate.snapshots_failed,
    );

    assert_eq!(
        acks.len() as u64,
        CALLERS * commands,
        "every command acknowledged"
    );
    assert!(
        cuts.total() >= MIN_CUTS,
        "only {} cuts (want ≥ {MIN_CUTS}): raise the cut probabilities",
        cuts.total()
    );
    assert!(
        cuts.after_server_answer > 0,
        "no cut after the server answered: {cuts:?}"
    );
    assert!(
        indeterminate > 0,
        "no indeterminate outcome in {} cuts",
        cuts.total()
    );
    assert!(
        committed_unseen > 0,
        "none of the {indeterminate_commands} commands with an indeterminate outcome had \
         committed (no cut between the commit and the answer reached an append)"
    );

    audit_by_sql(&pool, &acks).await;
    let streams = streams_by_sql(&pool).await;
    let report = assert_audit(&acks, &streams);
    assert_eq!(report.acks_verified, acks.len());
    let mut acked_balance: HashMap<&str, i64> = HashMap::new();
    for ack in &acks {
        *acked_balance.entry(ack.id.as_str()).or_default() += ack.amount;
    }
    for (id, stream) in &streams {
        assert_eq!(
            fold(stream.iter().map(|s| &s.event)).balance,
            acked_balance.get(id.as_str()).copied().unwrap_or(0),
            "{id}: the stored balance is not the sum of the acknowledged deposits"
        );
    }
    let fresh = reading_executor(direct_events, direct_snapshots);
    assert_states_equal_fold(&fresh, &streams).await;
    fresh.shutdown().await;
}
