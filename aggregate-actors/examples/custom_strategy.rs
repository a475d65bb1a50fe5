//! A snapshot strategy of your own: snapshot right after a large money movement, and otherwise
//! once 5 events have accumulated since the last snapshot. The example checks that snapshots
//! were written when, and only when, the strategy said so.
//!
//! Run it with `cargo run -p aggregate-actors --example custom_strategy`.

use std::sync::{Arc, Mutex, PoisonError};

use aggregate_actors::Context;
use aggregate_actors::event_stores::StreamId;
use aggregate_actors::strategy::{SnapshotContext, SnapshotStrategy};
use aggregate_actors::{Aggregate, AggregateSettings, Executor, Retention};
use serde::{Deserialize, Serialize};

struct Account;

#[derive(Debug)]
enum Command {
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Debug, Serialize, Deserialize)]
enum Event {
    Deposited { amount: u64 },
    Withdrew { amount: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Balance {
    cents: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds")]
struct InsufficientFunds;

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = Event;
    type State = Balance;
    type Error = InsufficientFunds;

    fn decide(
        state: &Balance,
        command: &Command,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<Event>, InsufficientFunds> {
        match *command {
            Command::Deposit(amount) => Ok(vec![Event::Deposited { amount }]),
            Command::Withdraw(amount) if amount > state.cents => Err(InsufficientFunds),
            Command::Withdraw(amount) => Ok(vec![Event::Withdrew { amount }]),
        }
    }

    fn apply(state: &mut Balance, event: &Event) {
        match event {
            Event::Deposited { amount } => state.cents += amount,
            Event::Withdrew { amount } => state.cents -= amount,
        }
    }
}

/// Snapshot after a command that moved at least `large` cents, or once `every` events were
/// stored since the last snapshot. It records the versions it said yes to, for the checks below.
struct LargeMoves {
    large: u64,
    every: u64,
    asked: Arc<Mutex<Vec<u64>>>,
    said_yes: Arc<Mutex<Vec<u64>>>,
}

impl SnapshotStrategy<Account> for LargeMoves {
    // Asked after every command that stored events, on the aggregate's actor: keep it cheap.
    // It only answers; the state is encoded and written in the background.
    fn should_snapshot(&self, context: &SnapshotContext<'_, Account>) -> bool {
        let moved: u64 = context
            .new_events
            .iter()
            .map(|event| match event {
                Event::Deposited { amount } | Event::Withdrew { amount } => *amount,
            })
            .sum();
        let yes = moved >= self.large || context.events_since_snapshot() >= self.every;
        lock(&self.asked).push(context.version);
        if yes {
            println!(
                "  version {}: moved {moved}, {} event(s) since the snapshot at {} -> snapshot",
                context.version,
                context.events_since_snapshot(),
                context.last_snapshot_version
            );
            lock(&self.said_yes).push(context.version);
        }
        yes
    }
}

fn lock(versions: &Mutex<Vec<u64>>) -> std::sync::MutexGuard<'_, Vec<u64>> {
    versions.lock().unwrap_or_else(PoisonError::into_inner)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let said_yes = Arc::new(Mutex::new(Vec::new()));
    let strategy = LargeMoves {
        large: 1_000,
        every: 5,
        asked: Arc::clone(&asked),
        said_yes: Arc::clone(&said_yes),
    };
    let settings = AggregateSettings::new()
        .strategy(strategy)
        // Only the strategy decides here: no snapshot on passivation or shutdown, and every
        // snapshot kept (the default retention keeps the newest 3).
        .snapshot_on_passivation(false)
        .retention(Retention {
            keep_newest: 100,
            max_age: None,
        });
    let executor = Executor::in_memory()
        .register::<Account>(settings)
        .build()?;

    println!("commands on account bob:");
    let commands = [
        Command::Deposit(100),    // v1: 1 event since the start
        Command::Deposit(2_000),  // v2: large -> snapshot
        Command::Withdraw(50),    // v3
        Command::Deposit(10),     // v4
        Command::Deposit(10),     // v5
        Command::Deposit(10),     // v6
        Command::Deposit(10),     // v7: 5 events since v2 -> snapshot
        Command::Withdraw(1_500), // v8: large -> snapshot
        Command::Withdraw(5_000), // rejected: stores nothing, the strategy is not asked
        Command::Deposit(1),      // v9
        Command::Deposit(1),      // v10
    ];
    for command in commands {
        let outcome = executor.execute::<Account>("bob", command).await;
        if let Err(error) = outcome {
            println!("  rejected: {error}");
        }
        // Snapshots are written in the background; wait for each, so that a newer request
        // cannot supersede an older one still queued and every decision shows in the store.
        executor.flush_snapshots().await;
    }

    let asked = lock(&asked).clone();
    let said_yes = lock(&said_yes).clone();
    println!("strategy asked at versions {asked:?}, said yes at {said_yes:?}");
    assert_eq!(asked, (1..=10).collect::<Vec<u64>>());
    assert_eq!(said_yes, [2, 7, 8]);

    // The snapshot store holds exactly those versions…
    let stream = StreamId::new(Account::TYPE, "bob")?;
    let mut stored: Vec<u64> = executor
        .snapshot_store()
        .list(&stream, 0, u64::MAX)
        .await?
        .iter()
        .map(|record| record.version)
        .collect();
    stored.sort_unstable();
    println!("snapshots in the store: {stored:?}");
    assert_eq!(stored, said_yes);

    // …and the executor's statistics count them.
    let stats = executor
        .stats_of::<Account>()
        .ok_or("Account is registered")?;
    println!(
        "snapshots taken: {}, bytes stored: {}",
        stats.aggregate.snapshots_taken, stats.aggregate.snapshot_bytes_stored
    );
    assert_eq!(stats.aggregate.snapshots_taken, 3);
    assert_eq!(stats.aggregate.snapshots_failed, 0);
    assert_eq!(stats.aggregate.snapshots_superseded, 0);

    // The next activation starts from the newest one (version 8) and replays 2 events.
    executor.passivate::<Account>("bob").await?;
    let view = executor.state::<Account>("bob").await?;
    println!(
        "re-activated: {:?} at version {}, from snapshot {:?}, {} events replayed",
        view.state,
        view.version,
        view.activation.snapshot_version(),
        view.activation.events_replayed
    );
    assert_eq!(view.state.cents, 592);
    assert_eq!(view.activation.snapshot_version(), Some(8));
    assert_eq!(view.activation.events_replayed, 2);

    executor.shutdown().await;
    // No passivation snapshots: still the strategy's three.
    assert_eq!(
        executor
            .stats_of::<Account>()
            .map(|s| s.aggregate.snapshots_taken),
        Some(3)
    );
    Ok(())
}
