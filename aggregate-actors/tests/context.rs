//! What `decide` sees through its `Context`: the aggregate's id, the command's id, the version
//! it decides on, the clock of the settings (or the test kit) and the registered services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, StreamId,
};
use aggregate_actors::testkit::TestKit;
use aggregate_actors::{
    Aggregate, AggregateSettings, CommandId, CommandOptions, Context, Executor, ManualClock,
};
use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What one run of `decide` saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    id: String,
    command_id: CommandId,
    version: u64,
    first_now: DateTime<Utc>,
    second_now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum ProbeEvent {
    Seen(Seen),
    Noted,
}

#[derive(Debug, thiserror::Error, PartialEq)]
enum ProbeError {
    #[error("no journal registered")]
    NoJournal,
}

/// A service: every run of `decide` is written down here.
#[derive(Default)]
struct Journal(Mutex<Vec<Seen>>);

/// A service that moves the clock while `decide` runs.
struct ClockHand(ManualClock);

struct Probe;

impl Aggregate for Probe {
    const TYPE: &'static str = "probe";
    type Command = ();
    type Event = ProbeEvent;
    type State = u64;
    type Error = ProbeError;

    fn decide(
        _: &u64,
        (): &(),
        ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<ProbeEvent>, ProbeError> {
        let journal = ctx.service::<Arc<Journal>>().ok_or(ProbeError::NoJournal)?;
        let first_now = ctx.now();
        if let Some(hand) = ctx.service::<ClockHand>() {
            hand.0.advance(Duration::seconds(1));
        }
        let seen = Seen {
            id: ctx.id().to_owned(),
            command_id: ctx.command_id(),
            version: ctx.version(),
            first_now,
            second_now: ctx.now(),
        };
        journal.0.lock().push(seen.clone());
        Ok(vec![ProbeEvent::Seen(seen)])
    }

    fn apply(count: &mut u64, _: &ProbeEvent) {
        *count += 1;
    }
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn executor(events: Arc<dyn EventStore>, settings: AggregateSettings<Probe>) -> Executor {
    Executor::builder(events, Arc::new(InMemorySnapshotStore::new()))
        .register::<Probe>(settings)
        .build()
        .unwrap()
}

#[tokio::test]
async fn decide_sees_the_aggregate_id_the_command_id_the_version_and_the_settings_clock() {
    let journal = Arc::new(Journal::default());
    let clock = ManualClock::new(start());
    let settings = AggregateSettings::<Probe>::new()
        .service(Arc::clone(&journal))
        .clock(clock.clone());
    let executor = executor(Arc::new(InMemoryEventStore::new()), settings);

    let first = CommandId::new();
    executor
        .execute_with::<Probe>("p-1", (), CommandOptions::new().command_id(first))
        .await
        .unwrap();
    clock.advance(Duration::minutes(30));
    let second = executor.execute::<Probe>("p-1", ()).await.unwrap();

    let seen = journal.0.lock().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].id, "p-1");
    assert_eq!(seen[0].command_id, first);
    assert_eq!(seen[0].version, 0);
    assert_eq!(seen[0].first_now, start());
    assert_eq!(seen[1].command_id, second.command_id);
    assert_eq!(seen[1].version, 1);
    assert_eq!(seen[1].first_now, start() + Duration::minutes(30));
}

#[tokio::test]
async fn one_decision_reads_one_instant_however_the_clock_moves_during_it() {
    let journal = Arc::new(Journal::default());
    let clock = ManualClock::new(start());
    let settings = AggregateSettings::<Probe>::new()
        .service(Arc::clone(&journal))
        .service(ClockHand(clock.clone()))
        .clock(clock.clone());
    let executor = executor(Arc::new(InMemoryEventStore::new()), settings);
    executor.execute::<Probe>("p-2", ()).await.unwrap();
    executor.execute::<Probe>("p-2", ()).await.unwrap();

    let seen = journal.0.lock().clone();
    for run in &seen {
        assert_eq!(run.first_now, run.second_now, "{run:?}");
    }
    assert_eq!(
        seen[1].first_now - seen[0].first_now,
        Duration::seconds(1),
        "the clock did move during the first decision"
    );
}

#[tokio::test]
async fn a_decision_made_again_after_a_conflict_sees_the_same_command_id_and_the_newer_version() {
    let journal = Arc::new(Journal::default());
    let events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let settings = AggregateSettings::<Probe>::new().service(Arc::clone(&journal));
    let executor = executor(Arc::clone(&events), settings);
    executor.execute::<Probe>("p-3", ()).await.unwrap();

    // Another executor on the same store writes behind the live actor's back: its next
    // append conflicts.
    let other = self::executor(
        Arc::clone(&events),
        AggregateSettings::new().service(Arc::new(Journal::default())),
    );
    other.execute::<Probe>("p-3", ()).await.unwrap();

    let command_id = CommandId::new();
    let committed = executor
        .execute_with::<Probe>("p-3", (), CommandOptions::new().command_id(command_id))
        .await
        .unwrap();
    assert_eq!(committed.version, 3);

    let seen = journal.0.lock().clone();
    let runs: Vec<(CommandId, u64)> = seen[1..]
        .iter()
        .map(|s| (s.command_id, s.version))
        .collect();
    assert_eq!(
        runs,
        vec![(command_id, 1), (command_id, 2)],
        "decided at the stale version, conflicted, decided again on the newer state"
    );
    match &committed.events[..] {
        [ProbeEvent::Seen(stored)] => assert_eq!(stored.version, 2, "only the last run is stored"),
        other => panic!("unexpected events {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_service_is_the_aggregates_own_rejection_and_stores_nothing() {
    let events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let executor = executor(Arc::clone(&events), AggregateSettings::new());
    let error = executor.execute::<Probe>("p-4", ()).await.unwrap_err();
    assert!(
        matches!(
            error,
            aggregate_actors::CommandError::Rejected(ProbeError::NoJournal)
        ),
        "{error}"
    );
    let stream = StreamId::new(Probe::TYPE, "p-4").unwrap();
    assert_eq!(events.stream_version(&stream).await.unwrap(), 0);
}

#[tokio::test]
async fn the_test_kit_clock_stands_still_until_the_test_moves_it() {
    let journal = Arc::new(Journal::default());
    let settings = AggregateSettings::<Probe>::new().service(Arc::clone(&journal));
    let mut kit = TestKit::<Probe>::with_stores(
        Arc::new(InMemoryEventStore::new()),
        Arc::new(InMemorySnapshotStore::new()),
        settings,
    );
    kit.clock().set(start());
    kit.when(()).await;
    kit.when(()).await;
    kit.clock().advance(Duration::days(31));
    kit.when(()).await;

    let times: Vec<DateTime<Utc>> = journal.0.lock().iter().map(|s| s.first_now).collect();
    assert_eq!(times, vec![start(), start(), start() + Duration::days(31)]);
}

#[test]
fn decide_can_be_called_directly_with_a_standalone_context() {
    let journal = Arc::new(Journal::default());
    let mut services = aggregate_actors::Services::new();
    services.insert(Arc::clone(&journal));
    let clock = ManualClock::new(start());
    let command_id = CommandId::new();
    let mut ctx = Context::<Probe>::new("direct", command_id, 7, &clock, &services);
    let events = Probe::decide(&7, &(), &mut ctx).unwrap();
    assert!(matches!(&events[..], [ProbeEvent::Seen(s)] if s.version == 7 && s.id == "direct"));
    assert_eq!(
        Probe::decide(&0, &(), &mut Context::standalone("alone")),
        Err(ProbeError::NoJournal),
        "a standalone context has no services"
    );
}
