//! Time travel: `Executor::reconstruct` rebuilds an aggregate's state at a past version or at a
//! past instant from the stores, starting from the newest valid snapshot at or before that
//! point, and reports how it got there (the snapshot used, the events replayed).
//!
//! Run it with `cargo run -p aggregate-actors --example time_travel`.

use std::convert::Infallible;
use std::time::Duration;

use aggregate_actors::Context;
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{Aggregate, AggregateSettings, At, Executor, ExecutorError, Reconstruction};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

struct Account;

/// The only command: deposit this many cents.
#[derive(Debug)]
struct Deposit(u64);

#[derive(Debug, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Balance {
    cents: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Deposit;
    type Event = Deposited;
    type State = Balance;
    // Deposits are never rejected.
    type Error = Infallible;

    fn decide(
        _: &Balance,
        Deposit(amount): &Deposit,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<Deposited>, Infallible> {
        Ok(vec![Deposited { amount: *amount }])
    }

    fn apply(state: &mut Balance, event: &Deposited) {
        state.cents += event.amount;
    }
}

fn show(target: &str, past: &Reconstruction<Account>) {
    let snapshot = match &past.from_snapshot {
        Some(origin) => format!("from the snapshot at version {}", origin.version),
        None => "no snapshot".to_owned(),
    };
    let reached_at = past.reached_at.map_or_else(
        || "-".to_owned(),
        |at| at.format("%H:%M:%S%.6f").to_string(),
    );
    println!(
        "{target:<18} -> version {:>2}, {:>3} cents; {snapshot}, {} events replayed; \
         last event recorded at {reached_at}",
        past.version, past.state.cents, past.events_replayed
    );
}

/// The current time, a little apart from the events recorded just before and after it.
async fn instant_between_events() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    now
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A snapshot every 5 events (versions 5 and 10 below).
    let executor = Executor::in_memory()
        .register::<Account>(AggregateSettings::new().strategy(EveryNEvents::new(5)))
        .build()?;

    // Deposits of 10, 20, …, 120 cents: after version v the balance is 5·v·(v+1).
    let before_first = instant_between_events().await;
    let mut after_seventh = before_first;
    for v in 1..=12 {
        executor
            .execute::<Account>("carol", Deposit(10 * v))
            .await?;
        // Snapshots are written in the background, and stamped with the time they are
        // written: waiting for each keeps the snapshots used below independent of timing.
        executor.flush_snapshots().await;
        if v == 7 {
            after_seventh = instant_between_events().await;
        }
    }

    // By version: the state right after that event.
    let v3 = executor
        .reconstruct::<Account>("carol", At::Version(3))
        .await?;
    show("At::Version(3)", &v3);
    assert_eq!((v3.version, v3.state.cents), (3, 60));
    assert!(
        v3.from_snapshot.is_none(),
        "no snapshot at or before version 3"
    );
    assert_eq!(v3.events_replayed, 3);

    let v8 = executor
        .reconstruct::<Account>("carol", At::Version(8))
        .await?;
    show("At::Version(8)", &v8);
    assert_eq!((v8.version, v8.state.cents), (8, 360));
    assert_eq!(v8.from_snapshot.as_ref().map(|s| s.version), Some(5));
    assert_eq!(v8.events_replayed, 3, "events 6, 7 and 8");

    // By time: every event recorded at or before the instant.
    let t7 = executor
        .reconstruct::<Account>("carol", At::Time(after_seventh))
        .await?;
    show("At::Time(after 7)", &t7);
    assert_eq!((t7.version, t7.state.cents), (7, 280));
    assert_eq!(t7.from_snapshot.as_ref().map(|s| s.version), Some(5));
    assert_eq!(t7.events_replayed, 2);
    assert!(t7.reached_at.is_some_and(|at| at <= after_seventh));

    // Before the first event: the default state at version 0.
    let t0 = executor
        .reconstruct::<Account>("carol", At::Time(before_first))
        .await?;
    show("At::Time(before)", &t0);
    assert_eq!((t0.version, t0.state.cents), (0, 0));
    assert!(t0.reached_at.is_none() && t0.from_snapshot.is_none());

    // The newest version equals the live state (reconstruct reads the stores and leaves the
    // live actor alone).
    let v12 = executor
        .reconstruct::<Account>("carol", At::Version(12))
        .await?;
    show("At::Version(12)", &v12);
    let live = executor.state::<Account>("carol").await?;
    assert_eq!((v12.version, &v12.state), (live.version, &live.state));
    assert_eq!(v12.from_snapshot.as_ref().map(|s| s.version), Some(10));
    assert_eq!(v12.events_replayed, 2);

    // Versions the stream has not reached, and aggregates without events, are errors.
    let future = executor
        .reconstruct::<Account>("carol", At::Version(99))
        .await;
    println!("At::Version(99)    -> {}", error_of(&future));
    assert!(matches!(
        future,
        Err(ExecutorError::VersionNotReached {
            requested: 99,
            current: 12
        })
    ));
    let nobody = executor
        .reconstruct::<Account>("nobody", At::Version(1))
        .await;
    println!("unknown id         -> {}", error_of(&nobody));
    assert!(matches!(nobody, Err(ExecutorError::NotFound { .. })));

    executor.shutdown().await;
    Ok(())
}

fn error_of(result: &Result<Reconstruction<Account>, ExecutorError>) -> String {
    match result {
        Ok(past) => format!("unexpectedly reached version {}", past.version),
        Err(error) => format!("error: {error}"),
    }
}
