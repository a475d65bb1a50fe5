//! Upcasting ([`Aggregate::UPCASTERS`]): events written by an old build of an aggregate (event
//! schema 1) are read by the new build (schema 3) through two upcasters, on every read path
//! (activation past a snapshot of the old state schema, reconstruction, a retried command's
//! stored outcome), on both backends. A gap in the chain and an event from a newer build are
//! typed errors naming the event, never a panic, and the old build's events stay stored as
//! written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::sync::Arc;

use crate::common::Stores;
use aggregate_actors::Context;
use aggregate_actors::event_stores::{ReadQuery, StreamId};
use aggregate_actors::upcast::{self, UpcastError, Upcaster, Value};
use aggregate_actors::{
    ActivationError, Aggregate, AggregateSettings, At, CommandId, CommandOptions, Executor,
    ExecutorError,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The old build: schema 1 stores whole units
// ---------------------------------------------------------------------------------------------

struct WalletV1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum EventV1 {
    Opened { owner: String },
    Deposited { amount: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct StateV1 {
    owner: Option<String>,
    units: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for WalletV1 {
    const TYPE: &'static str = "wallet";
    type Command = EventV1;
    type Event = EventV1;
    type State = StateV1;
    type Error = Never;

    fn decide(
        _: &StateV1,
        command: &EventV1,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<EventV1>, Never> {
        Ok(vec![command.clone()])
    }

    fn apply(state: &mut StateV1, event: &EventV1) {
        match event {
            EventV1::Opened { owner } => state.owner = Some(owner.clone()),
            EventV1::Deposited { amount } => state.units += amount,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The new build: schema 2 stored cents, schema 3 adds the currency
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
enum EventV2 {
    Opened { owner: String },
    Deposited { cents: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum EventV3 {
    Opened { owner: String },
    Deposited { cents: u64, currency: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct StateV3 {
    owner: Option<String>,
    cents: u64,
    currencies: Vec<String>,
}

/// Typed: units become cents.
fn one_to_two(_: &str, value: Value) -> Result<Value, UpcastError> {
    upcast::typed(value, |old: EventV1| match old {
        EventV1::Opened { owner } => EventV2::Opened { owner },
        EventV1::Deposited { amount } => EventV2::Deposited {
            cents: amount * 100,
        },
    })
}

/// Untyped: a deposit gains the currency every old deposit was in.
fn two_to_three(event_type: &str, mut value: Value) -> Result<Value, UpcastError> {
    if event_type != "Deposited" {
        return Ok(value);
    }
    let Value::Map(variant) = &mut value else {
        return Err(UpcastError::failed("a deposit is a one-entry map"));
    };
    match variant.first_mut() {
        Some((_, Value::Map(fields))) => {
            fields.push((Value::from("currency"), Value::from("EUR")));
            Ok(value)
        }
        _ => Err(UpcastError::failed("a deposit has named fields")),
    }
}

/// `FULL = false` leaves out the step from schema 1: a gap in the chain.
struct WalletV3<const FULL: bool>;

impl<const FULL: bool> Aggregate for WalletV3<FULL> {
    const TYPE: &'static str = "wallet";
    const EVENT_SCHEMA_VERSION: u32 = 3;
    const STATE_SCHEMA_VERSION: u32 = 2;
    const UPCASTERS: &'static [Upcaster] = if FULL {
        &[Upcaster::new(2, two_to_three), Upcaster::new(1, one_to_two)]
    } else {
        &[Upcaster::new(2, two_to_three)]
    };
    type Command = EventV3;
    type Event = EventV3;
    type State = StateV3;
    type Error = Never;

    fn decide(
        _: &StateV3,
        command: &EventV3,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<EventV3>, Never> {
        Ok(vec![command.clone()])
    }

    fn apply(state: &mut StateV3, event: &EventV3) {
        match event {
            EventV3::Opened { owner } => state.owner = Some(owner.clone()),
            EventV3::Deposited { cents, currency } => {
                state.cents += cents;
                state.currencies.push(currency.clone());
            }
        }
    }

    fn event_type(event: &EventV3) -> Cow<'static, str> {
        Cow::Borrowed(match event {
            EventV3::Opened { .. } => "Opened",
            EventV3::Deposited { .. } => "Deposited",
        })
    }
}

fn executor(stores: &Stores) -> aggregate_actors::ExecutorBuilder {
    Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
}

fn deposit(cents: u64) -> EventV3 {
    EventV3::Deposited {
        cents,
        currency: "USD".into(),
    }
}

/// The activation error of `result`, which must be an unreadable stored event.
fn corrupt_event<T: std::fmt::Debug>(
    result: Result<T, ExecutorError>,
) -> (u64, String, u32, UpcastError) {
    match result {
        Err(ExecutorError::Activation(error)) => match &*error {
            ActivationError::CorruptEvent {
                version,
                event_type,
                schema_version,
                source,
                ..
            } => (
                *version,
                event_type.clone(),
                *schema_version,
                source.clone(),
            ),
            other => panic!("expected CorruptEvent, got {other:?}"),
        },
        other => panic!("expected an activation error, got {other:?}"),
    }
}

async fn old_events_are_read_by_the_new_build_through_two_upcasters(stores: Stores) {
    // The old build writes an opening and three deposits, and snapshots its (old) state.
    let old = executor(&stores)
        .register::<WalletV1>(AggregateSettings::new())
        .build()
        .unwrap();
    let retried = CommandId::new();
    old.execute::<WalletV1>(
        "w1",
        EventV1::Opened {
            owner: "ada".into(),
        },
    )
    .await
    .unwrap();
    old.execute_with::<WalletV1>(
        "w1",
        EventV1::Deposited { amount: 5 },
        CommandOptions::new().command_id(retried),
    )
    .await
    .unwrap();
    for amount in [7, 11] {
        old.execute::<WalletV1>("w1", EventV1::Deposited { amount })
            .await
            .unwrap();
    }
    assert_eq!(old.snapshot_now::<WalletV1>("w1").await.unwrap(), 4);
    old.flush_snapshots().await;
    old.shutdown().await;

    // The new build reads them: the old-schema snapshot is skipped, every event is lifted.
    let new = executor(&stores)
        .register::<WalletV3<true>>(AggregateSettings::new())
        .build()
        .unwrap();
    let view = new.state::<WalletV3<true>>("w1").await.unwrap();
    assert_eq!(view.version, 4);
    assert_eq!(
        view.state,
        StateV3 {
            owner: Some("ada".into()),
            cents: 2_300,
            currencies: vec!["EUR".into(); 3],
        }
    );
    assert_eq!(view.activation.snapshot_version(), None, "old state schema");
    assert_eq!(view.activation.snapshots_skipped, 1);
    assert_eq!(view.activation.events_replayed, 4);

    // It appends at its own schema after the old events.
    let committed = new
        .execute::<WalletV3<true>>("w1", deposit(1))
        .await
        .unwrap();
    assert_eq!(committed.version, 5);
    let stream = StreamId::new("wallet", "w1").unwrap();
    let stored = stores
        .events
        .read_stream(&stream, ReadQuery::default())
        .await
        .unwrap();
    let schemas: Vec<u32> = stored.iter().map(|e| e.schema_version).collect();
    assert_eq!(schemas, [1, 1, 1, 1, 3], "old events stay as written");

    // A retry of a command the old build applied is answered with its events, lifted.
    let again = new
        .execute_with::<WalletV3<true>>(
            "w1",
            deposit(999),
            CommandOptions::new().command_id(retried),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.version, 2);
    assert_eq!(
        again.events,
        [EventV3::Deposited {
            cents: 500,
            currency: "EUR".into()
        }]
    );

    // Time travel reads through the same chain.
    let at_two = new
        .reconstruct::<WalletV3<true>>("w1", At::Version(2))
        .await
        .unwrap();
    assert_eq!(at_two.state.cents, 500);
    assert_eq!(at_two.state.currencies, ["EUR"]);
    new.shutdown().await;

    // A build missing the step from schema 1 fails on the first event it replays, naming it
    // (without snapshots: the new build's snapshot at version 5 would spare it the replay).
    let (events, no_snapshots) = stores.without_snapshots();
    let gap = Executor::builder(events, no_snapshots)
        .register::<WalletV3<false>>(AggregateSettings::new())
        .build()
        .unwrap();
    let (version, event_type, schema, source) =
        corrupt_event(gap.state::<WalletV3<false>>("w1").await);
    assert_eq!((version, event_type.as_str(), schema), (1, "Opened", 1));
    assert_eq!(
        source,
        UpcastError::MissingUpcaster {
            from: 1,
            current: 3
        }
    );
    assert!(!gap.is_live::<WalletV3<false>>("w1"));
    gap.shutdown().await;

    // The old build, started again from its own snapshot at version 4, refuses the newer
    // build's event after it.
    let old_again = executor(&stores)
        .register::<WalletV1>(AggregateSettings::new())
        .build()
        .unwrap();
    let (version, _, schema, source) = corrupt_event(old_again.state::<WalletV1>("w1").await);
    assert_eq!((version, schema), (5, 3));
    assert_eq!(
        source,
        UpcastError::NewerSchema {
            stored: 3,
            current: 1
        }
    );
    old_again.shutdown().await;
}

on_both_backends! {
    upcasting => old_events_are_read_by_the_new_build_through_two_upcasters;
}
