//! Creation commands ([`Aggregate::is_creation`]): a cold aggregate whose first command says it
//! starts the aggregate is decided on the default state and appended with expected version 0,
//! without reading the store. The hint never changes an outcome: on an existing stream the
//! append conflicts (or a rejection is checked) and the command is decided again on the stored
//! state; a retried command id is still recognised. Proven on both backends, and over random
//! histories against the same aggregate without the hint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::common::{CountingReads, Stores};
use aggregate_actors::Context;
use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, ReadQuery, SnapshotStore, StreamId,
};
use aggregate_actors::{
    Aggregate, AggregateSettings, AggregateStats, CommandError, CommandId, CommandOptions, Executor,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// An account, opened by a creation command; `HINT = false` is the same aggregate without it
// ---------------------------------------------------------------------------------------------

struct Account<const HINT: bool>;

#[derive(Debug, Clone, PartialEq)]
enum AccountCommand {
    /// Creation: refused on an open account, or without an owner.
    Open {
        owner: String,
    },
    /// Creation: opens a new account, or touches an open one.
    OpenOrTouch,
    Deposit(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Touched,
    Deposited { amount: i64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct AccountState {
    owner: Option<String>,
    balance: i64,
    touches: u32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum AccountError {
    #[error("already open")]
    AlreadyOpen,
    #[error("an account needs an owner")]
    NoOwner,
    #[error("not open")]
    NotOpen,
}

impl<const HINT: bool> Aggregate for Account<HINT> {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type State = AccountState;
    type Error = AccountError;

    fn decide(
        state: &AccountState,
        command: &AccountCommand,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { .. } if state.owner.is_some() => Err(AccountError::AlreadyOpen),
            AccountCommand::Open { owner } if owner.is_empty() => Err(AccountError::NoOwner),
            AccountCommand::Open { owner } => Ok(vec![AccountEvent::Opened {
                owner: owner.clone(),
            }]),
            AccountCommand::OpenOrTouch if state.owner.is_some() => Ok(vec![AccountEvent::Touched]),
            AccountCommand::OpenOrTouch => Ok(vec![AccountEvent::Opened {
                owner: "auto".into(),
            }]),
            AccountCommand::Deposit(_) if state.owner.is_none() => Err(AccountError::NotOpen),
            AccountCommand::Deposit(amount) => {
                Ok(vec![AccountEvent::Deposited { amount: *amount }])
            }
        }
    }

    fn apply(state: &mut AccountState, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => state.owner = Some(owner.clone()),
            AccountEvent::Touched => state.touches += 1,
            AccountEvent::Deposited { amount } => state.balance += amount,
        }
    }

    fn is_creation(command: &AccountCommand) -> bool {
        HINT && matches!(
            command,
            AccountCommand::Open { .. } | AccountCommand::OpenOrTouch
        )
    }
}

type Hinted = Account<true>;

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
    }
}

fn executor_on<A: Aggregate>(
    events: Arc<dyn EventStore>,
    snapshots: &Arc<dyn SnapshotStore>,
) -> Executor {
    Executor::builder(events, Arc::clone(snapshots))
        .register::<A>(AggregateSettings::new())
        .build()
        .unwrap()
}

fn stats(executor: &Executor) -> AggregateStats {
    executor.stats_of::<Hinted>().unwrap().aggregate
}

/// Every event of `id`, decoded, in version order.
async fn stored(store: &dyn EventStore, id: &str) -> Vec<AccountEvent> {
    let stream = StreamId::new("account", id).unwrap();
    let events = store.read_stream(&stream, ReadQuery::all()).await.unwrap();
    for (expected, event) in (1u64..).zip(&events) {
        assert_eq!(event.version, expected, "contiguous versions");
    }
    events
        .iter()
        .map(|e| rmp_serde::from_slice(&e.payload).unwrap())
        .collect()
}

/// Writes `commands` to `id` through an executor that is then shut down, so `id` is cold.
async fn existing(stores: &Stores, id: &str, commands: &[AccountCommand]) {
    let executor = executor_on::<Hinted>(Arc::clone(&stores.events), &stores.snapshots);
    for command in commands {
        executor
            .execute::<Hinted>(id, command.clone())
            .await
            .unwrap();
    }
    executor.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Behaviour, on both backends
// ---------------------------------------------------------------------------------------------

on_both_backends! {
    a_creation_command_on_a_new_stream_is_stored_at_version_1_without_reading_the_store
        => creation_on_a_new_stream_reads_nothing;
    a_creation_command_on_an_existing_stream_is_decided_again_on_the_stored_state
        => creation_on_an_existing_stream_is_redecided;
    a_rejection_on_the_presumed_default_state_is_checked_against_the_store
        => rejection_on_the_presumed_state_is_checked;
    a_retried_creation_command_is_answered_as_a_duplicate_by_a_cold_actor
        => retried_creation_is_a_duplicate;
    concurrent_creation_commands_on_one_new_id_store_exactly_one_opening
        => concurrent_creations_store_one_opening;
}

async fn creation_on_a_new_stream_reads_nothing(stores: Stores) {
    let counting = CountingReads::wrap(&stores.events);
    let executor = executor_on::<Hinted>(counting.clone(), &stores.snapshots);

    let opened = executor
        .execute::<Hinted>("new", open("alice"))
        .await
        .unwrap();
    assert_eq!(opened.version, 1);
    assert_eq!(
        counting.reads(),
        0,
        "no read before the creation command's append"
    );
    let deposited = executor
        .execute::<Hinted>("new", AccountCommand::Deposit(7))
        .await
        .unwrap();
    assert_eq!(deposited.version, 2);
    assert_eq!(
        counting.reads(),
        0,
        "the live actor holds the state it appended"
    );

    let stats = stats(&executor);
    assert_eq!((stats.activations, stats.activations_without_read), (1, 1));
    assert_eq!((stats.creation_hints_missed, stats.conflicts), (0, 0));
    let report = stats.last_activation.unwrap();
    assert_eq!(
        (report.events_replayed, report.snapshot_version()),
        (0, None)
    );
    assert_eq!(
        executor.state::<Hinted>("new").await.unwrap().state.balance,
        7
    );
    executor.shutdown().await;
    assert_eq!(
        stored(&*stores.events, "new").await,
        vec![
            AccountEvent::Opened {
                owner: "alice".into()
            },
            AccountEvent::Deposited { amount: 7 }
        ]
    );
}

async fn creation_on_an_existing_stream_is_redecided(stores: Stores) {
    existing(&stores, "old", &[open("alice"), AccountCommand::Deposit(5)]).await;
    let executor = executor_on::<Hinted>(Arc::clone(&stores.events), &stores.snapshots);

    let touched = executor
        .execute::<Hinted>("old", AccountCommand::OpenOrTouch)
        .await
        .unwrap();
    assert_eq!(touched.version, 3, "appended after the stored events");
    assert_eq!(
        touched.events,
        vec![AccountEvent::Touched],
        "decided on the stored state, not on the presumed default"
    );
    let stats = stats(&executor);
    assert_eq!(
        stats.creation_hints_missed, 1,
        "the append at version 0 conflicted"
    );
    assert_eq!(
        stats.conflicts, 0,
        "a missed hint is not a conflict between writers"
    );
    assert_eq!((stats.activations, stats.activations_without_read), (1, 0));
    assert_eq!(
        stats.last_activation.unwrap().version,
        2,
        "activated from the stored stream after the conflict"
    );

    assert!(executor.passivate::<Hinted>("old").await.unwrap());
    let refused = executor.execute::<Hinted>("old", open("bob")).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(AccountError::AlreadyOpen))
        ),
        "{refused:?}"
    );
    let view = executor.state::<Hinted>("old").await.unwrap();
    assert_eq!(
        (
            view.version,
            view.state.owner.as_deref(),
            view.state.balance,
            view.state.touches
        ),
        (3, Some("alice"), 5, 1)
    );
    executor.shutdown().await;
    assert_eq!(
        stored(&*stores.events, "old").await.len(),
        3,
        "the refused opening stored nothing"
    );
}

async fn rejection_on_the_presumed_state_is_checked(stores: Stores) {
    existing(&stores, "taken", &[open("alice")]).await;
    let counting = CountingReads::wrap(&stores.events);
    let executor = executor_on::<Hinted>(counting.clone(), &stores.snapshots);

    // On the default state "no owner" is refused first; the stored state says "already open".
    let refused = executor.execute::<Hinted>("taken", open("")).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(AccountError::AlreadyOpen))
        ),
        "{refused:?}"
    );
    assert_eq!(stats(&executor).creation_hints_missed, 1);

    let before = counting.reads();
    let refused = executor.execute::<Hinted>("fresh", open("")).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(AccountError::NoOwner))),
        "{refused:?}"
    );
    assert!(
        counting.reads() > before,
        "the rejection was checked against the store"
    );
    executor.shutdown().await;
    assert!(stored(&*stores.events, "fresh").await.is_empty());
    assert_eq!(stored(&*stores.events, "taken").await.len(), 1);
}

async fn retried_creation_is_a_duplicate(stores: Stores) {
    let executor = executor_on::<Hinted>(Arc::clone(&stores.events), &stores.snapshots);
    let options = CommandOptions::new().command_id(CommandId::from_key("open-retried"));

    let first = executor
        .execute_with::<Hinted>("retried", open("alice"), options.clone())
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(executor.passivate::<Hinted>("retried").await.unwrap());
    let again = executor
        .execute_with::<Hinted>("retried", open("alice"), options)
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "the retry is recognised, not refused as already open"
    );
    assert_eq!((again.version, again.events), (1, first.events));
    executor.shutdown().await;
    assert_eq!(stored(&*stores.events, "retried").await.len(), 1);
}

async fn concurrent_creations_store_one_opening(stores: Stores) {
    let executor = executor_on::<Hinted>(Arc::clone(&stores.events), &stores.snapshots);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let executor = executor.clone();
            tokio::spawn(async move {
                executor
                    .execute::<Hinted>("raced", open(&format!("owner-{i}")))
                    .await
            })
        })
        .collect();
    let mut opened = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(committed) => {
                assert_eq!(committed.version, 1);
                opened += 1;
            }
            Err(CommandError::Rejected(AccountError::AlreadyOpen)) => {}
            Err(other) => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!(opened, 1);
    executor.shutdown().await;
    assert_eq!(stored(&*stores.events, "raced").await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Over random histories: the hint changes no outcome and no stored event
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Command(usize, AccountCommand),
    Passivate(usize),
}

const IDS: [&str; 3] = ["a", "b", "c"];

fn step() -> impl Strategy<Value = Step> {
    let id = 0..IDS.len();
    prop_oneof![
        (id.clone(), prop_oneof![Just(""), Just("ann"), Just("bo")])
            .prop_map(|(i, owner)| Step::Command(i, open(owner))),
        id.clone()
            .prop_map(|i| Step::Command(i, AccountCommand::OpenOrTouch)),
        (id.clone(), 1i64..100).prop_map(|(i, n)| Step::Command(i, AccountCommand::Deposit(n))),
        id.prop_map(Step::Passivate),
    ]
}

/// Each command's outcome (version and events, or the rejection) and each id's stored events.
async fn run<A>(
    steps: &[Step],
) -> (
    Vec<Result<(u64, Vec<AccountEvent>), String>>,
    Vec<Vec<AccountEvent>>,
)
where
    A: Aggregate<
            Command = AccountCommand,
            Event = AccountEvent,
            State = AccountState,
            Error = AccountError,
        >,
{
    let events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(InMemorySnapshotStore::new());
    let executor = executor_on::<A>(Arc::clone(&events), &snapshots);
    let mut outcomes = Vec::new();
    for step in steps {
        match step {
            Step::Command(i, command) => {
                let outcome = executor.execute::<A>(IDS[*i], command.clone()).await;
                outcomes.push(
                    outcome
                        .map(|c| (c.version, c.events))
                        .map_err(|e| e.to_string()),
                );
            }
            Step::Passivate(i) => {
                executor.passivate::<A>(IDS[*i]).await.unwrap();
            }
        }
    }
    executor.shutdown().await;
    let mut streams = Vec::new();
    for id in IDS {
        streams.push(stored(&*events, id).await);
    }
    (outcomes, streams)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_creation_hint_changes_no_outcome_and_no_stored_event(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (hinted, unhinted) = runtime.block_on(async {
            (run::<Account<true>>(&steps).await, run::<Account<false>>(&steps).await)
        });
        prop_assert_eq!(hinted, unhinted);
    }
}
