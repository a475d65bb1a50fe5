//! A server that stops answering without closing anything (the fault proxy black-holes every
//! connection): every call still returns within its call timeout (plus a little), the command in
//! flight on each aggregate as `Indeterminate` and the commands queued behind it dropped as
//! expired, never started. Once traffic flows again, raw SQL on a direct connection shows that
//! nothing answered `NotStored` was stored and at most the command in flight per aggregate was;
//! retrying every indeterminate command with its id on a fresh executor applies each exactly
//! once (a duplicate answer for those that had committed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{
    EventStore, PgConfig, PgEventStore, PgSnapshotStore, SnapshotStore, StoreLimits,
};
use aggregate_actors::{
    AggregateSettings, AggregateStats, CommandError, CommandId, CommandOptions, Executor,
    ExecutorError, RuntimeConfig,
};
use integration_tests::proxy::FaultProxy;
use integration_tests::proxy::server_addr;
use integration_tests::seed;
use integration_tests::wallet::{Wallet, WalletCommand, WalletEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPool;
use uuid::Uuid;

const AGGREGATES: usize = 6;
const PER_AGGREGATE: usize = 4;
const CALL_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How much later than its call timeout a call may return.
const SLACK: Duration = Duration::from_secs(1);

/// How a call made during the stall ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Indeterminate,
    Expired,
    /// Another retryable not-stored error.
    NotStored(String),
}

/// One command sent during the stall.
#[derive(Debug, Clone)]
struct Sent {
    wallet: String,
    command_id: CommandId,
    command: WalletCommand,
    outcome: Outcome,
    took: Duration,
}

/// Events stored per command id, read with raw SQL.
async fn stored_per_command(pool: &PgPool) -> HashMap<Uuid, i64> {
    let rows: Vec<(Option<Uuid>, i64)> =
        sqlx::query_as("SELECT command_id, count(*) FROM events GROUP BY command_id")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(command, events)| {
            let command =
                command.unwrap_or_else(|| panic!("{events} event(s) stored without a command id"));
            (command, events)
        })
        .collect()
}

/// Panics unless every stream's versions are exactly 1..n.
async fn assert_streams_contiguous(pool: &PgPool) {
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
}

/// Commands the actors have finished with, whatever the outcome.
fn handled(stats: &AggregateStats) -> u64 {
    stats.commands_succeeded
        + stats.commands_rejected
        + stats.commands_failed
        + stats.commands_duplicate
        + stats.commands_expired
        + stats.commands_indeterminate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_stalled_server_calls_end_in_time_queued_commands_expire_unstored_and_retries_apply_once()
 {
    let Some(database) = fresh_database().await else {
        return;
    };
    let seed = seed("stalled_server", "STALLED_SERVER_SEED");
    let mut rng = StdRng::seed_from_u64(seed);

    let (direct_events, direct_snapshots) = database.stores(StoreLimits::default()).await.unwrap();
    let pool = direct_events.pool().clone();
    let direct_events: Arc<dyn EventStore> = Arc::new(direct_events);
    let direct_snapshots: Arc<dyn SnapshotStore> = Arc::new(direct_snapshots);

    let proxy = FaultProxy::start_seeded(server_addr(database.url()), seed);
    let config = PgConfig::new(proxy.url_for(database.url()))
        .max_connections(8)
        .min_connections(8)
        .acquire_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(5))
        .with_client_timeout(CALL_TIMEOUT + Duration::from_millis(500))
        .run_migrations(false)
        .application_name("stalled-server");
    let events = PgEventStore::connect(&config).await.unwrap();
    let pool_of_executor = events.pool().clone();
    let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), config.limits);
    let executor = Executor::builder(Arc::new(events), Arc::new(snapshots))
        .register::<Wallet>(AggregateSettings::new().runtime(RuntimeConfig {
            call_timeout: CALL_TIMEOUT,
            ..RuntimeConfig::default()
        }))
        .build()
        .unwrap();

    let wallets: Vec<String> = (0..AGGREGATES).map(|i| format!("stalled-{i}")).collect();
    // Warm every aggregate at once, so the pool holds a connection per aggregate: the commands
    // in flight when the server stalls are then really sent (not waiting for a connection).
    let warming: Vec<_> = wallets
        .iter()
        .map(|wallet| {
            let (executor, wallet) = (executor.clone(), wallet.clone());
            tokio::spawn(async move {
                executor
                    .execute::<Wallet>(&wallet, WalletCommand::deposit(1))
                    .await
                    .unwrap_or_else(|e| panic!("{wallet}: warming up: {e}"));
            })
        })
        .collect();
    for task in warming {
        task.await.unwrap();
    }
    let idle_since = Instant::now();
    while pool_of_executor.num_idle() < AGGREGATES && idle_since.elapsed() < SLACK * 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warmed = handled(&executor.stats_of::<Wallet>().unwrap().aggregate);

    proxy.stall();
    let calls: Vec<_> = (0..PER_AGGREGATE)
        .flat_map(|_| wallets.iter())
        .map(|wallet| {
            let wallet = wallet.clone();
            let executor = executor.clone();
            let command_id = CommandId::new();
            let command = WalletCommand::Deposit {
                command: command_id.as_uuid(),
                amount: rng.random_range(1..=100),
            };
            tokio::spawn(async move {
                let started = Instant::now();
                let result = executor
                    .execute_with::<Wallet>(
                        &wallet,
                        command.clone(),
                        CommandOptions::new().command_id(command_id),
                    )
                    .await;
                let took = started.elapsed();
                let outcome = match result {
                    Ok(committed) => panic!(
                        "{wallet}: command {command_id} acknowledged at version {} while the \
                         server was stalled",
                        committed.version
                    ),
                    Err(CommandError::Rejected(e)) => panic!("{wallet}: rejected: {e}"),
                    Err(CommandError::Indeterminate(outcome)) => {
                        assert_eq!(outcome.command_id, command_id);
                        Outcome::Indeterminate
                    }
                    Err(CommandError::NotStored(ExecutorError::Expired {
                        command_id: expired,
                        ..
                    })) => {
                        assert_eq!(expired, command_id);
                        Outcome::Expired
                    }
                    Err(CommandError::NotStored(error)) => {
                        assert!(error.is_retryable(), "{wallet}: not retryable: {error}");
                        Outcome::NotStored(error.to_string())
                    }
                };
                Sent {
                    wallet,
                    command_id,
                    command,
                    outcome,
                    took,
                }
            })
        })
        .collect();
    let mut sent = Vec::new();
    for call in calls {
        sent.push(call.await.unwrap());
    }

    // The actors finish with the queued commands right after the in-flight ones time out.
    let waited = Instant::now();
    let stats = loop {
        let stats = executor.stats_of::<Wallet>().unwrap().aggregate;
        // A bound, not a pause: a loaded machine may take a while to hand the queue through.
        if handled(&stats) - warmed >= sent.len() as u64 || waited.elapsed() > SLACK * 20 {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    proxy.resume();
    // The held requests reach the server now; give them time to arrive, then wait until none
    // of the executor's sessions is still running a statement or inside a transaction.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = Instant::now();
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'stalled-server' AND state <> 'idle'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(30),
            "{busy} session(s) still busy 30 s after the resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let count = |kind: Outcome| {
        let kind = std::mem::discriminant(&kind);
        sent.iter()
            .filter(|s| std::mem::discriminant(&s.outcome) == kind)
            .count()
    };
    let mut not_stored_causes: Vec<&str> = sent
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::NotStored(cause) => Some(cause.as_str()),
            _ => None,
        })
        .collect();
    not_stored_causes.sort_unstable();
    not_stored_causes.dedup();
    let slowest = sent.iter().map(|s| s.took).max().unwrap();
    let stored = stored_per_command(&pool).await;
    let committed_unseen = sent
        .iter()
        .filter(|s| s.outcome == Outcome::Indeterminate)
        .filter(|s| stored.contains_key(&s.command_id.as_uuid()))
        .count();
    eprintln!(
        "stalled_server: seed {seed}, {} calls during the stall: {} indeterminate ({} of them \
         committed once the server was reachable again), {} expired, {} other not stored; \
         slowest call {slowest:.2?} (bound {:?}); executor: {} indeterminate, {} expired, {} \
         failed; other not-stored causes: {not_stored_causes:?}",
        sent.len(),
        count(Outcome::Indeterminate),
        committed_unseen,
        count(Outcome::Expired),
        count(Outcome::NotStored(String::new())),
        CALL_TIMEOUT + SLACK,
        stats.commands_indeterminate,
        stats.commands_expired,
        stats.commands_failed,
    );

    for s in &sent {
        assert!(
            s.took <= CALL_TIMEOUT + SLACK,
            "{}: command {} took {:?} (call timeout {CALL_TIMEOUT:?}, outcome {:?})",
            s.wallet,
            s.command_id,
            s.took,
            s.outcome
        );
    }
    // One command per aggregate is in flight (its append waits for the server); every one
    // queued behind it is dropped as expired when its turn comes, past its deadline.
    assert!(
        stats.commands_indeterminate <= AGGREGATES as u64,
        "more than one command in flight per aggregate: {stats:?}"
    );
    assert!(
        stats.commands_expired >= (sent.len() - AGGREGATES) as u64,
        "the {} commands queued behind the stalled ones were not all dropped as expired: \
         {stats:?}",
        sent.len() - AGGREGATES
    );
    assert!(count(Outcome::Expired) as u64 <= stats.commands_expired);
    assert!(
        count(Outcome::Indeterminate) > 0,
        "no call was indeterminate although appends were in flight on a stalled server"
    );

    // Nothing answered NotStored is stored; at most the in-flight command per aggregate is.
    for s in sent.iter().filter(|s| s.outcome != Outcome::Indeterminate) {
        assert!(
            !stored.contains_key(&s.command_id.as_uuid()),
            "{}: command {} was answered {:?} (nothing stored) but is stored",
            s.wallet,
            s.command_id,
            s.outcome
        );
    }
    for wallet in &wallets {
        let stored_here = sent
            .iter()
            .filter(|s| &s.wallet == wallet && stored.contains_key(&s.command_id.as_uuid()))
            .count();
        assert!(
            stored_here <= 1,
            "{wallet}: {stored_here} commands sent during the stall are stored; only the one in \
             flight may be, the ones queued behind it must expire"
        );
    }
    for (command, events) in &stored {
        assert_eq!(*events, 1, "command {command} stored {events} events");
    }
    assert_streams_contiguous(&pool).await;
    executor.shutdown().await;
    drop(proxy);

    // Retry every indeterminate command with its id on a fresh executor, straight to the server.
    let fresh = Executor::builder(direct_events, direct_snapshots)
        .register::<Wallet>(AggregateSettings::new())
        .build()
        .unwrap();
    let mut duplicates = 0;
    for s in sent.iter().filter(|s| s.outcome == Outcome::Indeterminate) {
        let committed = fresh
            .execute_with::<Wallet>(
                &s.wallet,
                s.command.clone(),
                CommandOptions::new().command_id(s.command_id),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: retrying {}: {e}", s.wallet, s.command_id));
        let had_committed = stored.contains_key(&s.command_id.as_uuid());
        assert_eq!(
            committed.duplicate,
            had_committed,
            "{}: retry of {} answered duplicate={} but it was {}stored before the retry",
            s.wallet,
            s.command_id,
            committed.duplicate,
            if had_committed { "" } else { "not " }
        );
        let WalletCommand::Deposit { amount, .. } = s.command else {
            unreachable!()
        };
        assert_eq!(
            committed.events,
            vec![WalletEvent::Deposited {
                command: s.command_id.as_uuid(),
                part: 0,
                parts: 1,
                amount,
            }]
        );
        duplicates += u64::from(committed.duplicate);
    }
    fresh.shutdown().await;

    let after = stored_per_command(&pool).await;
    for s in &sent {
        let events = after.get(&s.command_id.as_uuid()).copied().unwrap_or(0);
        let expected = i64::from(s.outcome == Outcome::Indeterminate);
        assert_eq!(
            events, expected,
            "{}: command {} ({:?} during the stall) has {events} event(s) stored after the retries",
            s.wallet, s.command_id, s.outcome
        );
    }
    assert_eq!(
        after.len(),
        AGGREGATES + count(Outcome::Indeterminate),
        "stored commands: the warm-ups plus each retried command once"
    );
    assert_streams_contiguous(&pool).await;
    eprintln!(
        "stalled_server: {} indeterminate commands retried: {duplicates} answered as duplicates, \
         {} applied now",
        count(Outcome::Indeterminate),
        count(Outcome::Indeterminate) as u64 - duplicates
    );
}
