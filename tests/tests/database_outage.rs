//! A database outage in the middle of a load, on a PostgreSQL cluster this test owns (the
//! shared one is never touched): while the server is down every call fails fast with a typed,
//! retryable error (none hangs, none is acknowledged); when it is back the same executor serves
//! again without a restart, nothing acknowledged is lost, and every state — including those of
//! actors whose append failed mid-outage — equals the fold of the stored events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::testing::in_ci;
use aggregate_actors::event_stores::{
    EventStore, PgConfig, PgEventStore, PgSnapshotStore, SnapshotStore, StoreError,
};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{
    ActivationError, AggregateSettings, CommandError, Executor, ExecutorError, RuntimeConfig,
};
use integration_tests::audit::{assert_audit, assert_states_equal_fold, read_all_wallets};
use integration_tests::cluster::{NoCluster, PgCluster};
use integration_tests::reading_executor;
use integration_tests::wallet::{Wallet, WalletCommand, WalletError};
use integration_tests::worker::Ack;
use tokio::sync::Mutex;

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const OUTAGE: Duration = Duration::from_secs(3);

/// One call made during the load.
struct Call {
    started: Instant,
    ended: Instant,
    outcome: Result<Ack, String>,
}

/// True when `error` is the typed "store unreachable" error, directly or through activation.
/// `Unavailable` (nothing sent), or `Indeterminate` from the store: an append sent on a
/// connection that had died with the server (group commit keeps its own connection between
/// batches, and a write into a dead socket cannot tell whether the server read it). The audit
/// below shows that none of those committed.
fn is_typed_retryable_failure(error: &CommandError<WalletError>) -> bool {
    match error {
        CommandError::NotStored(ExecutorError::Store(StoreError::Unavailable { .. })) => true,
        CommandError::Indeterminate(indeterminate) => matches!(
            &indeterminate.cause,
            ExecutorError::Store(StoreError::Indeterminate { .. })
        ),
        CommandError::NotStored(ExecutorError::Activation(activation)) => matches!(
            &**activation,
            ActivationError::Store {
                source: StoreError::Unavailable { .. },
                ..
            }
        ),
        _ => false,
    }
}

async fn load(
    executor: Executor,
    task: usize,
    stop: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // Mostly warm actors; every tenth command activates a new one.
        let id = if n.is_multiple_of(10) {
            format!("cold-{task}-{n}")
        } else {
            format!("warm-{}", (n as usize * 7 + task) % 12)
        };
        let command = if n.is_multiple_of(4) {
            WalletCommand::withdraw(3)
        } else {
            WalletCommand::deposit(5)
        };
        let (command_id, amount) = (command.id().unwrap(), command.net_amount());
        let started = Instant::now();
        let result = executor.execute::<Wallet>(&id, command).await;
        let ended = Instant::now();
        let outcome = match result {
            Ok(done) => Ok(Ack {
                id,
                version: done.version,
                amount,
                command: command_id,
                events: done.events.len() as u32,
            }),
            Err(CommandError::Rejected(_)) => Err("rejected".into()),
            Err(error) => {
                assert!(
                    is_typed_retryable_failure(&error) && error.is_retryable(),
                    "during an outage a call fails with a typed retryable store error, got: {error:?}"
                );
                Err(error.to_string())
            }
        };
        let failed = outcome.is_err();
        calls.lock().await.push(Call {
            started,
            ended,
            outcome,
        });
        if !failed {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_calls_fast_and_retryably_and_the_same_executor_recovers_losing_nothing() {
    let cluster = match tokio::task::spawn_blocking(PgCluster::start).await.unwrap() {
        Ok(cluster) => cluster,
        Err(NoCluster::NoBinaries(message)) => {
            assert!(
                !in_ci(),
                "CI=true and no PostgreSQL binaries for the outage test: {message}"
            );
            eprintln!("SKIPPED: the outage test needs PostgreSQL binaries: {message}");
            return;
        }
    };
    let cluster = Arc::new(cluster);
    let config = PgConfig::new(cluster.url())
        .max_connections(8)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .application_name("outage-test");
    let events = PgEventStore::connect(&config).await.unwrap();
    let pool = events.pool().clone();
    let snapshots = PgSnapshotStore::with_migrated_pool(pool.clone(), config.limits);
    let events: Arc<dyn EventStore> = Arc::new(events);
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(snapshots);
    let executor = Executor::builder(Arc::clone(&events), Arc::clone(&snapshots))
        .register::<Wallet>(
            AggregateSettings::new()
                .strategy(EveryNEvents::new(5))
                .runtime(RuntimeConfig {
                    call_timeout: CALL_TIMEOUT,
                    ..RuntimeConfig::default()
                }),
        )
        .build()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            tokio::spawn(load(
                executor.clone(),
                task,
                Arc::clone(&stop),
                Arc::clone(&calls),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let down_from = Instant::now();
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.stop_server())
        .await
        .unwrap();
    let down = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let up_from = Instant::now();
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.start_server())
        .await
        .unwrap();
    let up = Instant::now();
    // Wait for the first success after the restart, then a little more load.
    let recovered_at = loop {
        let first = calls
            .lock()
            .await
            .iter()
            .filter(|call| call.started >= up && call.outcome.is_ok())
            .map(|call| call.ended)
            .min();
        if let Some(at) = first {
            break at;
        }
        assert!(
            up.elapsed() < Duration::from_secs(30),
            "the executor did not serve again within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let calls = std::mem::take(&mut *calls.lock().await);
    let acks: Vec<Ack> = calls
        .iter()
        .filter_map(|call| call.outcome.as_ref().ok().cloned())
        .collect();
    let failures: Vec<&Call> = calls
        .iter()
        .filter(|call| matches!(&call.outcome, Err(e) if e != "rejected"))
        .collect();
    let during_outage: Vec<&Call> = calls
        .iter()
        .filter(|call| call.started >= down && call.ended <= up_from)
        .collect();
    let max_failure_latency = failures
        .iter()
        .map(|call| call.ended - call.started)
        .max()
        .unwrap_or_default();

    assert!(
        acks.iter().any(|_| true)
            && calls
                .iter()
                .any(|c| c.ended < down_from && c.outcome.is_ok()),
        "the load ran before the outage"
    );
    // A failing call takes one or two acquire timeouts (a cold or stale actor reads the
    // snapshot store, then the events), so each task fits one or two into the outage.
    assert!(
        during_outage.len() >= 2 && failures.len() >= 4,
        "calls were made and failed while the server was down ({} wholly inside the \
         outage, {} failures)",
        during_outage.len(),
        failures.len()
    );
    assert!(
        during_outage.iter().all(|call| call.outcome.is_err()),
        "nothing is acknowledged while the server is down"
    );
    // One failing call costs at most two acquire timeouts (snapshot lookup, then events); a
    // call queued behind another on the same actor waits for that one too.
    assert!(
        max_failure_latency < CALL_TIMEOUT
            && max_failure_latency <= 4 * ACQUIRE_TIMEOUT + Duration::from_secs(1),
        "failing calls return within a few pool acquire timeouts ({ACQUIRE_TIMEOUT:?}), \
         not the call timeout: the slowest took {max_failure_latency:?}"
    );

    // The same executor serves every aggregate again: one more command each, first try.
    let ids: HashSet<String> = acks.iter().map(|ack| ack.id.clone()).collect();
    let mut final_acks = Vec::new();
    for id in &ids {
        let command = WalletCommand::deposit(1);
        let command_id = command.id().unwrap();
        let done = executor
            .execute::<Wallet>(id, command)
            .await
            .unwrap_or_else(|e| panic!("{id}: the executor does not serve after the outage: {e}"));
        final_acks.push(Ack {
            id: id.clone(),
            version: done.version,
            amount: 1,
            command: command_id,
            events: 1,
        });
    }
    let mut all_acks = acks.clone();
    all_acks.extend(final_acks);

    let streams = read_all_wallets(&pool, &*events).await.unwrap();
    let report = assert_audit(&all_acks, &streams);
    // States held by the live actors that went through the outage, then fresh ones.
    assert_states_equal_fold(&executor, &streams).await;
    let reader = reading_executor(Arc::clone(&events), Arc::clone(&snapshots));
    assert_states_equal_fold(&reader, &streams).await;
    reader.shutdown().await;
    let stats = executor.stats_of::<Wallet>().unwrap().aggregate;
    executor.shutdown().await;

    eprintln!(
        "database_outage: outage {:.2?} (stop took {:.2?}, start took {:.2?}); time to \
         recovery {:.2?} after the restart; {} calls failed fast (slowest {:.2?}, acquire \
         timeout {ACQUIRE_TIMEOUT:?}, call timeout {CALL_TIMEOUT:?}), all typed retryable; \
         {} commands acknowledged and verified; {} snapshot writes failed, {} taken",
        up - down_from,
        down - down_from,
        up - up_from,
        recovered_at.saturating_duration_since(up),
        failures.len(),
        max_failure_latency,
        report.acks_verified,
        stats.snapshots_failed,
        stats.snapshots_taken,
    );
}
