//! Panics in user code (`decide` and `apply`) for some aggregates, under a concurrent load over
//! many aggregates from many tasks, on PostgreSQL. Several tasks talk to each faulty aggregate
//! at once, so commands are queued behind the one that panics. Other aggregates never notice:
//! every one of their commands is acknowledged and stored. A command that failed (the panicking
//! one, or one queued behind it) stores nothing; the faulty aggregates recover (their next
//! command works) and their state equals the fold of what is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{EventStore, SnapshotStore, StoreLimits};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{AggregateSettings, CommandError, Executor, ExecutorError};
use integration_tests::audit::{assert_audit, assert_states_equal_fold, read_all_wallets};
use integration_tests::wallet::{Wallet, WalletCommand};
use integration_tests::worker::Ack;
use integration_tests::{reading_executor, seed};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use uuid::Uuid;

const IDS: usize = 150;
const COMMANDS_PER_ID: usize = 16;
const TASKS: usize = 12;

fn is_faulty(id: usize) -> bool {
    id % 10 == 3
}

/// The commands of one wallet; faulty ones get a panic in `decide` and one in `apply`.
fn commands_for(id: usize) -> Vec<WalletCommand> {
    (0..COMMANDS_PER_ID)
        .map(|i| match (is_faulty(id), i) {
            (true, 4) => WalletCommand::PanicInDecide,
            (true, 9) => WalletCommand::PanicInApply {
                command: Uuid::now_v7(),
            },
            _ => WalletCommand::deposit(i as i64 + 1),
        })
        .collect()
}

enum Outcome {
    Acked(Ack),
    Stopped(Option<Uuid>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_in_decide_and_apply_under_load_touch_only_their_own_aggregates_which_then_recover()
{
    let Some(database) = fresh_database().await else {
        return;
    };
    integration_tests::quiet_intentional_panics();
    let seed = seed("user_code_faults", "FAULTS_SEED");
    let (events, snapshots) = database.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let events: Arc<dyn EventStore> = Arc::new(events);
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(snapshots);
    let executor = Executor::builder(Arc::clone(&events), Arc::clone(&snapshots))
        .register::<Wallet>(AggregateSettings::new().strategy(EveryNEvents::new(3)))
        .build()
        .unwrap();

    // Every (wallet, command) pair, shuffled and dealt to the tasks: each wallet gets commands
    // from several tasks at once.
    let mut work: Vec<(usize, WalletCommand)> = (0..IDS)
        .flat_map(|id| commands_for(id).into_iter().map(move |c| (id, c)))
        .collect();
    work.shuffle(&mut StdRng::seed_from_u64(seed));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mine: Vec<_> = work.iter().skip(t).step_by(TASKS).cloned().collect();
        let executor = executor.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for (n, command) in mine {
                let id = format!("user-{n}");
                let (command_id, amount) = (command.id(), command.net_amount());
                match executor.execute::<Wallet>(&id, command).await {
                    Ok(done) => outcomes.push((
                        n,
                        Outcome::Acked(Ack {
                            id,
                            version: done.version,
                            amount,
                            command: command_id.unwrap(),
                            events: done.events.len() as u32,
                        }),
                    )),
                    Err(CommandError::NotStored(ExecutorError::ActorStopped { .. }))
                        if is_faulty(n) =>
                    {
                        outcomes.push((n, Outcome::Stopped(command_id)));
                    }
                    Err(other) => panic!("{id}: unexpected {other:?}"),
                }
            }
            outcomes
        }));
    }
    let mut acks = Vec::new();
    let mut stopped: BTreeMap<usize, Vec<Option<Uuid>>> = BTreeMap::new();
    for task in tasks {
        for (n, outcome) in task.await.unwrap() {
            match outcome {
                Outcome::Acked(ack) => acks.push((n, ack)),
                Outcome::Stopped(command) => stopped.entry(n).or_default().push(command),
            }
        }
    }
    let load_time = started.elapsed();

    // Healthy wallets: every command acknowledged.
    for n in (0..IDS).filter(|&n| !is_faulty(n)) {
        let count = acks.iter().filter(|(m, _)| *m == n).count();
        assert_eq!(
            count, COMMANDS_PER_ID,
            "user-{n}: every command acknowledged"
        );
    }
    // Faulty wallets: both panicking commands failed (others may have been queued behind them).
    let faulty: Vec<usize> = (0..IDS).filter(|&n| is_faulty(n)).collect();
    for &n in &faulty {
        let failed = stopped.get(&n).map_or(0, Vec::len);
        let acked = acks.iter().filter(|(m, _)| *m == n).count();
        assert!(failed >= 2, "user-{n}: both panics reported ({failed})");
        assert_eq!(
            acked + failed,
            COMMANDS_PER_ID,
            "user-{n}: every command answered"
        );
    }
    let collateral: usize = stopped.values().map(|v| v.len() - 2).sum();

    // Recovery: the next command on each faulty wallet works.
    let mut all_acks: Vec<Ack> = acks.into_iter().map(|(_, ack)| ack).collect();
    for &n in &faulty {
        let id = format!("user-{n}");
        let command = WalletCommand::deposit(1000);
        let command_id = command.id().unwrap();
        let done = executor
            .execute::<Wallet>(&id, command)
            .await
            .unwrap_or_else(|e| panic!("{id}: no recovery after the panics: {e}"));
        all_acks.push(Ack {
            id,
            version: done.version,
            amount: 1000,
            command: command_id,
            events: 1,
        });
    }

    let streams = read_all_wallets(&pool, &*events).await.unwrap();
    assert_eq!(streams.len(), IDS);
    let report = assert_audit(&all_acks, &streams);
    assert_eq!(
        report.commands_stored,
        all_acks.len(),
        "stored == acknowledged: a failed command stored nothing"
    );
    let failed_ids: HashSet<Uuid> = stopped.values().flatten().flatten().copied().collect();
    assert!(
        streams
            .values()
            .flatten()
            .all(|s| !failed_ids.contains(&s.event.command())),
        "a command that failed stored events"
    );
    // Through the executor that saw the panics, and through a fresh one.
    assert_states_equal_fold(&executor, &streams).await;
    let reader = reading_executor(Arc::clone(&events), Arc::clone(&snapshots));
    assert_states_equal_fold(&reader, &streams).await;
    reader.shutdown().await;
    let runtime = executor.stats_of::<Wallet>().unwrap().runtime;
    executor.shutdown().await;
    eprintln!(
        "user_code_faults: {IDS} wallets x {COMMANDS_PER_ID} commands from {TASKS} tasks in \
         {load_time:.1?}; {} faulty wallets, {} panics, {collateral} commands queued behind a \
         panic failed too; {} commands acknowledged and verified; runtime {runtime:?}",
        faulty.len(),
        faulty.len() * 2,
        report.acks_verified
    );
}
