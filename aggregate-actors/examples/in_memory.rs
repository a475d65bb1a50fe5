//! A bank account as an event-sourced aggregate on the in-memory stores: commands, a
//! rejected command, the state, and a retried command answered as a duplicate.
//!
//! Run it with `cargo run -p aggregate-actors --example in_memory`.

use aggregate_actors::Context;
use aggregate_actors::{
    Aggregate, AggregateSettings, CommandError, CommandId, CommandOptions, Executor,
    strategy::EveryNEvents,
};
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In-memory event and snapshot stores; `Executor::builder(events, snapshots)` takes others.
    // Snapshots: every 100 events here, and also when an actor passivates with newer events
    // (`.snapshot_on_passivation(false)` turns that off). They are written in the background:
    // another executor sees them after `executor.flush_snapshots().await`. Only the newest 3
    // are kept (`.retention(..)`), so time travel further back replays from the first event.
    let executor = Executor::in_memory()
        .register::<Account>(AggregateSettings::new().strategy(EveryNEvents::new(100)))
        .build()?;

    for command in [Command::Open("Alice".into()), Command::Deposit(500)] {
        executor.execute::<Account>("alice", command).await?;
    }
    // `Ok` means the events are stored: durable before the reply.
    let done = executor
        .execute::<Account>("alice", Command::Withdraw(200))
        .await?;
    println!(
        "withdrew 200: version {}, events {:?}",
        done.version, done.events
    );
    assert_eq!(done.version, 3);

    // A rejected command stores nothing and comes back as the aggregate's own error.
    let refused = executor
        .execute::<Account>("alice", Command::Withdraw(1_000))
        .await;
    let Err(CommandError::Rejected(error)) = refused else {
        return Err(format!("expected a rejection, got {refused:?}").into());
    };
    println!("withdraw 1000 rejected: {error}");
    assert!(matches!(
        error,
        AccountError::InsufficientFunds {
            available: 300,
            requested: 1_000
        }
    ));

    // Your own command id (an idempotency key): sending the command again, e.g. a retry after a
    // timeout, applies it once; the repeat is answered with the original outcome.
    let once = CommandOptions::new().command_id(CommandId::from_key("invoice-7"));
    let first = executor
        .execute_with::<Account>("alice", Command::Deposit(50), once.clone())
        .await?;
    let again = executor
        .execute_with::<Account>("alice", Command::Deposit(50), once)
        .await?;
    println!(
        "invoice-7: first at version {} (duplicate: {}), again at version {} (duplicate: {})",
        first.version, first.duplicate, again.version, again.duplicate
    );
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((first.version, again.version), (4, 4));

    // The state as the live actor holds it, with its version.
    let view = executor.state::<Account>("alice").await?;
    println!("state: {:?} at version {}", view.state, view.version);
    assert_eq!(view.state.cents, 350);
    assert_eq!(view.version, 4);

    let stats = executor
        .stats_of::<Account>()
        .ok_or("Account is registered")?;
    println!(
        "commands: {} succeeded, {} rejected, {} duplicate",
        stats.aggregate.commands_succeeded,
        stats.aggregate.commands_rejected,
        stats.aggregate.commands_duplicate
    );
    assert_eq!(stats.aggregate.commands_rejected, 1);
    assert_eq!(stats.aggregate.commands_duplicate, 1);

    // Lets queued commands finish and waits for pending snapshot writes.
    executor.shutdown().await;
    Ok(())
}
