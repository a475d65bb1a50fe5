//! The command context: `decide` reads the time from a clock (settable in tests), looks up a
//! service registered with the aggregate type, and sees its aggregate's id and the command's
//! id. A seat hold expires after the hold time of a service's policy.
//!
//! Run it with `cargo run -p aggregate-actors --example context`.

use std::sync::Arc;

use aggregate_actors::event_stores::{InMemoryEventStore, InMemorySnapshotStore};
use aggregate_actors::{
    Aggregate, AggregateSettings, CommandError, Context, Executor, ManualClock,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A service: how long a hold lasts. Read-only, so any number of runs of `decide` agree.
struct HoldPolicy {
    minutes: i64,
}

enum Command {
    Hold { customer: String },
    Confirm,
}

#[derive(Debug, Serialize, Deserialize)]
enum Event {
    /// The expiry is computed in `decide` and stored in the event: `apply` sees no clock.
    Held {
        customer: String,
        until: DateTime<Utc>,
        reference: String,
    },
    Confirmed {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Seat {
    held_until: Option<DateTime<Utc>>,
    confirmed: bool,
}

#[derive(Debug, thiserror::Error)]
enum SeatError {
    #[error("the seat is held until {0}")]
    Held(DateTime<Utc>),
    #[error("no hold to confirm, or it expired")]
    NoHold,
    #[error("no hold policy registered")]
    NoPolicy,
}

struct SeatHold;

impl Aggregate for SeatHold {
    const TYPE: &'static str = "seat";
    type Command = Command;
    type Event = Event;
    type State = Seat;
    type Error = SeatError;

    fn decide(
        seat: &Seat,
        command: &Command,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<Event>, SeatError> {
        let now = ctx.now();
        let live_hold = seat.held_until.filter(|until| *until > now);
        match (command, live_hold) {
            (Command::Hold { .. }, _) if seat.confirmed => Err(SeatError::NoHold),
            (Command::Hold { .. }, Some(until)) => Err(SeatError::Held(until)),
            (Command::Hold { customer }, None) => {
                let policy = ctx.service::<HoldPolicy>().ok_or(SeatError::NoPolicy)?;
                let command_id = ctx.command_id().to_string();
                Ok(vec![Event::Held {
                    customer: customer.clone(),
                    until: now + Duration::minutes(policy.minutes),
                    // From the command id: the same however often `decide` runs.
                    reference: format!("{}-{}", ctx.id(), &command_id[command_id.len() - 6..]),
                }])
            }
            (Command::Confirm, Some(_)) if !seat.confirmed => {
                Ok(vec![Event::Confirmed { at: now }])
            }
            (Command::Confirm, _) => Err(SeatError::NoHold),
        }
    }

    fn apply(seat: &mut Seat, event: &Event) {
        match event {
            Event::Held { until, .. } => seat.held_until = Some(*until),
            Event::Confirmed { .. } => seat.confirmed = true,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = DateTime::parse_from_rfc3339("2026-11-28T09:00:00Z")?.with_timezone(&Utc);
    let clock = ManualClock::new(start);
    let settings = AggregateSettings::<SeatHold>::new()
        .service(HoldPolicy { minutes: 15 })
        .clock(clock.clone());
    let executor = Executor::builder(
        Arc::new(InMemoryEventStore::new()),
        Arc::new(InMemorySnapshotStore::new()),
    )
    .register::<SeatHold>(settings)
    .build()?;

    let held = executor
        .execute::<SeatHold>(
            "12A",
            Command::Hold {
                customer: "ada".into(),
            },
        )
        .await?;
    println!("09:00 hold by ada: {:?}", held.events);

    clock.advance(Duration::minutes(10));
    let second = executor
        .execute::<SeatHold>(
            "12A",
            Command::Hold {
                customer: "bob".into(),
            },
        )
        .await;
    println!("09:10 hold by bob: {}", describe(&second));
    assert!(matches!(
        second,
        Err(CommandError::Rejected(SeatError::Held(_)))
    ));

    clock.advance(Duration::minutes(10));
    let late = executor.execute::<SeatHold>("12A", Command::Confirm).await;
    println!("09:20 confirm: {}", describe(&late));
    assert!(matches!(
        late,
        Err(CommandError::Rejected(SeatError::NoHold))
    ));

    let rebooked = executor
        .execute::<SeatHold>(
            "12A",
            Command::Hold {
                customer: "bob".into(),
            },
        )
        .await?;
    let confirmed = executor
        .execute::<SeatHold>("12A", Command::Confirm)
        .await?;
    println!(
        "09:20 hold by bob, then confirm: version {}",
        confirmed.version
    );
    assert_eq!((rebooked.version, confirmed.version), (2, 3));
    executor.shutdown().await;
    Ok(())
}

fn describe<T>(outcome: &Result<T, CommandError<SeatError>>) -> String {
    match outcome {
        Ok(_) => "accepted".to_owned(),
        Err(error) => format!("rejected: {error}"),
    }
}
