//! The bank account of `in_memory.rs` (the same aggregate) on PostgreSQL: `PgEventStore` and
//! `PgSnapshotStore` on one pool, wired into `Executor::builder`, and what happens to its
//! snapshots.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@localhost:5432/postgres cargo run -p aggregate-actors --example postgres
//! # or, on a throw-away cluster (needs the PostgreSQL binaries: apt-get install postgresql):
//! scripts/pg-tmp run -- cargo run -p aggregate-actors --example postgres
//! ```
//!
//! It creates the tables `events` and `snapshots` if they are missing (the stores' embedded
//! migrations) and writes one new account per run, under a fresh id.
//!
//! Snapshots, as this example shows them:
//! - A snapshot is taken when the type's strategy says so after a command (here every 5
//!   events) and written **in the background**: the command's reply never waits for it. Call
//!   `Executor::flush_snapshots()` before you rely on a snapshot being in the store, e.g.
//!   before another executor (another process) activates the aggregate from it.
//! - A snapshot is also taken when an actor **passivates** (idle timeout, LRU eviction,
//!   `passivate`, shutdown) if it holds events newer than its last snapshot; on by default,
//!   `AggregateSettings::snapshot_on_passivation(false)` turns it off.
//! - **Retention** keeps the newest 3 snapshots of each aggregate by default (older ones are
//!   deleted after a new one is written and verified); `AggregateSettings::retention` changes it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aggregate_actors::Context;
use aggregate_actors::event_stores::{
    PgConfig, PgEventStore, PgSnapshotStore, SnapshotStore, StreamId,
};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{Aggregate, AggregateSettings, Executor};
use serde::{Deserialize, Serialize};

/// The aggregate type: a marker that ties the commands, events and state together.
struct Account;

/// What callers ask for.
#[derive(Debug)]
enum Command {
    Open(String),
    Deposit(u64),
    Withdraw(u64),
}

/// What happened: the events are stored, the state is derived from them.
#[derive(Debug, Serialize, Deserialize)]
enum Event {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrew { amount: u64 },
}

/// The state folded from the events. `Default` is the state before the first event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Balance {
    owner: Option<String>,
    cents: u64,
}

/// Why a command was rejected.
#[derive(Debug, thiserror::Error)]
enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: {available} available, {requested} requested")]
    InsufficientFunds { available: u64, requested: u64 },
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = Event;
    type State = Balance;
    type Error = AccountError;

    fn decide(
        state: &Balance,
        command: &Command,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<Event>, AccountError> {
        match command {
            Command::Open(_) if state.owner.is_some() => Err(AccountError::AlreadyOpen),
            Command::Open(owner) => Ok(vec![Event::Opened {
                owner: owner.clone(),
            }]),
            _ if state.owner.is_none() => Err(AccountError::NotOpen),
            Command::Deposit(amount) => Ok(vec![Event::Deposited { amount: *amount }]),
            Command::Withdraw(amount) if *amount > state.cents => {
                Err(AccountError::InsufficientFunds {
                    available: state.cents,
                    requested: *amount,
                })
            }
            Command::Withdraw(amount) => Ok(vec![Event::Withdrew { amount: *amount }]),
        }
    }

    fn apply(state: &mut Balance, event: &Event) {
        match event {
            Event::Opened { owner } => state.owner = Some(owner.clone()),
            Event::Deposited { amount } => state.cents += amount,
            Event::Withdrew { amount } => state.cents -= amount,
        }
    }

    // A hint: `Open` starts a new account, so a cold actor skips reading the store for it.
    fn is_creation(command: &Command) -> bool {
        matches!(command, Command::Open(_))
    }
}

/// The versions of the snapshots the store holds for `id`, newest first.
async fn snapshot_versions(
    snapshots: &dyn SnapshotStore,
    id: &str,
) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let stream = StreamId::new(Account::TYPE, id)?;
    let listed = snapshots.list(&stream, 0, u64::MAX).await?;
    Ok(listed.iter().map(|record| record.version).collect())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!(
            "DATABASE_URL is not set: this example needs a PostgreSQL server. Run it with\n  \
             DATABASE_URL=postgres://USER@HOST:PORT/DATABASE cargo run -p aggregate-actors --example postgres\n\
             or, on a throw-away cluster (apt-get install postgresql):\n  \
             scripts/pg-tmp run -- cargo run -p aggregate-actors --example postgres"
        );
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
            return Err("CI=true: DATABASE_URL must be set for the postgres example".into());
        }
        return Ok(());
    };

    // One pool for both stores. `connect` opens the pool and runs the embedded migrations;
    // `from_pool` puts the snapshot store on the same pool, so activation reads the newest
    // snapshot and the events after it in one statement.
    let config = PgConfig::new(url)
        .max_connections(8)
        .application_name("aggregate-actors-example");
    let events = PgEventStore::connect(&config).await?;
    let snapshots = PgSnapshotStore::from_pool(events.pool().clone(), config.limits).await?;
    let (events, snapshots) = (Arc::new(events), Arc::new(snapshots));

    // Snapshot every 5 events; on passivation (the default) and keep the newest 3 (the default).
    let settings = AggregateSettings::<Account>::new().strategy(EveryNEvents::new(5));
    let executor = Executor::builder(events.clone(), snapshots.clone())
        .register::<Account>(settings.clone())
        .build()?;

    // A fresh account per run, so the example can run again on the same database.
    let id = format!(
        "example-{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros()
    );
    executor
        .execute::<Account>(&id, Command::Open("Alice".into()))
        .await?;
    for n in 2..=22 {
        let command = if n % 4 == 0 {
            Command::Withdraw(30)
        } else {
            Command::Deposit(100)
        };
        executor.execute::<Account>(&id, command).await?;
        // Only so that the snapshots listed below do not depend on timing: a newer snapshot
        // request for an aggregate supersedes one still waiting to be written.
        executor.flush_snapshots().await;
    }
    let view = executor.state::<Account>(&id).await?;
    println!("{id}: {:?} at version {}", view.state, view.version);
    assert_eq!(view.version, 22);
    assert_eq!(view.state.cents, 16 * 100 - 5 * 30);

    // Snapshots at 5, 10, 15 and 20 were written; retention kept the newest 3.
    let kept = snapshot_versions(&*snapshots, &id).await?;
    println!("snapshots after 22 events (every 5, keep 3): {kept:?}");
    assert_eq!(kept, [20, 15, 10]);

    // Passivation snapshots the 2 events since version 20; `passivate` does not wait for the
    // write, `flush_snapshots` does.
    assert!(executor.passivate::<Account>(&id).await?);
    executor.flush_snapshots().await;
    let kept = snapshot_versions(&*snapshots, &id).await?;
    println!("snapshots after passivation: {kept:?}");
    assert_eq!(kept, [22, 20, 15]);
    executor.shutdown().await;

    // Another executor on the same database (as another process would be) activates the
    // account from the newest snapshot, replaying no events.
    let other = Executor::builder(events.clone(), snapshots.clone())
        .register::<Account>(settings)
        .build()?;
    let view = other.state::<Account>(&id).await?;
    println!(
        "another executor: {:?} at version {}, from snapshot {:?}, {} events replayed",
        view.state,
        view.version,
        view.activation.snapshot_version(),
        view.activation.events_replayed
    );
    assert_eq!(view.state.cents, 1_450);
    assert_eq!(view.activation.snapshot_version(), Some(22));
    assert_eq!(view.activation.events_replayed, 0);
    other.shutdown().await;

    events.close().await;
    Ok(())
}
