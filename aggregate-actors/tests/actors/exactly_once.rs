//! Commands are applied exactly once (DESIGN.md): a command id seen before is answered with its
//! original outcome and decides nothing (from the window of recent commands, rebuilt from the
//! events or carried in snapshots, or, beyond the window, from the store's unique event ids);
//! outcomes are either "not stored" or "indeterminate", and retrying either with the same id is
//! safe; a command past its deadline is dropped before `decide`; nothing after the append can
//! turn a stored command into a failure; unknown ids leave no actor behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use crate::common::{CountingReads, Stores};
use aggregate_actors::Context;
use aggregate_actors::event_stores::testing::{Hooked, HookedSnapshots, SnapshotHooks, StoreHooks};
use aggregate_actors::event_stores::{
    AppendReceipt, EventStore, NewEvent, ReadQuery, RecordedEvent, SnapshotRecord, SnapshotStore,
    StoreError, StoreResult, StreamId, StreamStart,
};
use aggregate_actors::strategy::{Never, SnapshotContext, SnapshotStrategy};
use aggregate_actors::{
    Aggregate, AggregateSettings, AggregateStats, CommandError, CommandId, CommandOptions,
    Committed, DedupWindow, Executor, ExecutorError, Indeterminate, Retention, RuntimeConfig,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// An aggregate that counts how often `decide` ran for each command
// ---------------------------------------------------------------------------------------------

/// How often `decide` ran, per command tag (tests run in parallel: each uses fresh tags).
static DECISIONS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

fn decisions(tag: &str) -> u64 {
    DECISIONS.lock().unwrap().get(tag).copied().unwrap_or(0)
}

/// A fresh tag, so a test counts only its own decisions.
fn tag() -> String {
    Uuid::now_v7().to_string()
}

/// A running total; every command carries a tag under which its decisions are counted.
struct Tally;

#[derive(Debug, Clone)]
enum TallyCommand {
    Add {
        tag: String,
        amount: i64,
    },
    AddMany {
        tag: String,
        amounts: Vec<i64>,
    },
    /// Refused when the total is below `amount`.
    Spend {
        tag: String,
        amount: i64,
    },
    /// Decides that nothing needs to happen.
    Nothing {
        tag: String,
    },
    /// Spends what is above `max`; decides nothing when the total is within it.
    Cap {
        tag: String,
        max: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyEvent {
    Added { amount: i64 },
    Spent { amount: i64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TallyState {
    total: i64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not enough")]
struct NotEnough;

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type State = TallyState;
    type Error = NotEnough;

    fn decide(
        state: &TallyState,
        command: &TallyCommand,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<TallyEvent>, NotEnough> {
        let tag = match command {
            TallyCommand::Add { tag, .. }
            | TallyCommand::AddMany { tag, .. }
            | TallyCommand::Spend { tag, .. }
            | TallyCommand::Nothing { tag }
            | TallyCommand::Cap { tag, .. } => tag,
        };
        *DECISIONS.lock().unwrap().entry(tag.clone()).or_default() += 1;
        match command {
            TallyCommand::Add { amount, .. } => Ok(vec![TallyEvent::Added { amount: *amount }]),
            TallyCommand::AddMany { amounts, .. } => Ok(amounts
                .iter()
                .map(|&amount| TallyEvent::Added { amount })
                .collect()),
            TallyCommand::Spend { amount, .. } if *amount > state.total => Err(NotEnough),
            TallyCommand::Spend { amount, .. } => Ok(vec![TallyEvent::Spent { amount: *amount }]),
            TallyCommand::Nothing { .. } => Ok(Vec::new()),
            TallyCommand::Cap { max, .. } if state.total <= *max => Ok(Vec::new()),
            TallyCommand::Cap { max, .. } => Ok(vec![TallyEvent::Spent {
                amount: state.total - max,
            }]),
        }
    }

    fn apply(state: &mut TallyState, event: &TallyEvent) {
        match event {
            TallyEvent::Added { amount } => state.total += amount,
            TallyEvent::Spent { amount } => state.total -= amount,
        }
    }
}

fn add(tag: &str, amount: i64) -> TallyCommand {
    TallyCommand::Add {
        tag: tag.to_owned(),
        amount,
    }
}

fn spend(tag: &str, amount: i64) -> TallyCommand {
    TallyCommand::Spend {
        tag: tag.to_owned(),
        amount,
    }
}

fn with_id(id: CommandId) -> CommandOptions {
    CommandOptions::new().command_id(id)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn executor_on(
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    settings: AggregateSettings<Tally>,
) -> Executor {
    Executor::builder(events, snapshots)
        .register::<Tally>(settings)
        .build()
        .unwrap()
}

fn executor(stores: &Stores, settings: AggregateSettings<Tally>) -> Executor {
    executor_on(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        settings,
    )
}

/// Settings under which only `snapshot_now` takes snapshots.
fn no_automatic_snapshots() -> AggregateSettings<Tally> {
    AggregateSettings::new()
        .strategy(Never)
        .snapshot_on_passivation(false)
}

fn stats(executor: &Executor) -> AggregateStats {
    executor.stats_of::<Tally>().unwrap().aggregate
}

fn stream(id: &str) -> StreamId {
    StreamId::new(Tally::TYPE, id).unwrap()
}

/// Every stored event of aggregate `id`.
async fn stored(store: &dyn EventStore, id: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(&stream(id), ReadQuery::all())
        .await
        .unwrap()
}

/// Waits (up to 5 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never true: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The command id an indeterminate outcome names, or a panic.
fn indeterminate<E: std::error::Error + Send + Sync + 'static>(
    outcome: Result<impl std::fmt::Debug, CommandError<E>>,
) -> Indeterminate {
    match outcome {
        Err(CommandError::Indeterminate(indeterminate)) => indeterminate,
        other => panic!("expected an indeterminate outcome, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Store wrappers
// ---------------------------------------------------------------------------------------------

/// What a faulty append does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppendFault {
    /// Appends and answers with the store's answer.
    None,
    /// Appends, then answers `StoreError::Indeterminate` (the answer was lost).
    IndeterminateAfterCommit,
    /// Answers `StoreError::Indeterminate` without appending (the request was lost).
    IndeterminateWithoutCommit,
    /// Answers `StoreError::Unavailable` without appending.
    Unavailable,
}

/// Hooks for an event store whose first `faulty` appends misbehave as `fault` says, and whose
/// appends wait while [`hold`](FaultyEvents::hold) is in force, until
/// [`release`](FaultyEvents::release): a slow append that takes exactly as long as the test
/// needs, however slow the machine. Each append runs in its own task, so it completes
/// (commits) even when the caller stops waiting for it, as a statement sent to a server does.
struct FaultyEvents {
    faulty: AtomicU32,
    fault: AppendFault,
    started: AtomicU64,
    /// False while appends are held.
    open: tokio::sync::watch::Sender<bool>,
}

impl FaultyEvents {
    fn new(inner: &Arc<dyn EventStore>, fault: AppendFault, faulty: u32) -> Arc<Hooked<Self>> {
        let hooks = Self {
            faulty: AtomicU32::new(faulty),
            fault,
            started: AtomicU64::new(0),
            open: tokio::sync::watch::Sender::new(true),
        };
        Arc::new(Hooked::new(Arc::clone(inner), hooks))
    }

    /// Makes appends wait until [`release`](Self::release), however long that takes.
    fn hold(&self) {
        self.open.send_replace(false);
    }

    /// Lets held (and later) appends go on.
    fn release(&self) {
        self.open.send_replace(true);
    }

    /// Appends started so far.
    fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl StoreHooks for FaultyEvents {
    async fn append(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let fault = match self
            .faulty
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => self.fault,
            Err(_) => AppendFault::None,
        };
        let inner = Arc::clone(inner);
        let stream = stream.clone();
        let lost = || StoreError::Indeterminate {
            message: "the answer was lost (test)".into(),
            source: None,
        };
        let mut open = self.open.subscribe();
        tokio::spawn(async move {
            // Only a dropped sender ends this wait otherwise, and the hooks own it.
            let _ = open.wait_for(|open| *open).await;
            match fault {
                AppendFault::None => inner.append(&stream, expected_version, events).await,
                AppendFault::IndeterminateAfterCommit => {
                    inner.append(&stream, expected_version, events).await?;
                    Err(lost())
                }
                AppendFault::IndeterminateWithoutCommit => Err(lost()),
                AppendFault::Unavailable => Err(StoreError::Unavailable {
                    message: "the store is down (test)".into(),
                    source: None,
                }),
            }
        })
        .await
        .unwrap()
    }
}

/// Hooks for an event store whose reads, once `unreadable` is set, return every event with a
/// payload that does not decode (what a damaged row or an event type this build cannot read
/// looks like).
struct UnreadableEvents {
    unreadable: AtomicBool,
}

impl UnreadableEvents {
    fn new(inner: &Arc<dyn EventStore>) -> Arc<Hooked<Self>> {
        let hooks = Self {
            unreadable: AtomicBool::new(false),
        };
        Arc::new(Hooked::new(Arc::clone(inner), hooks))
    }

    fn make_unreadable(&self) {
        self.unreadable.store(true, Ordering::SeqCst);
    }

    fn damage(&self, mut events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        if self.unreadable.load(Ordering::SeqCst) {
            for event in &mut events {
                // 0xc1 is never used in MessagePack.
                event.payload = vec![0xc1].into();
            }
        }
        events
    }
}

#[async_trait]
impl StoreHooks for UnreadableEvents {
    async fn read_stream(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        query: ReadQuery,
    ) -> StoreResult<Vec<RecordedEvent>> {
        Ok(self.damage(inner.read_stream(stream, query).await?))
    }

    async fn read_all(
        &self,
        inner: &Arc<dyn EventStore>,
        after_position: u64,
        limit: usize,
    ) -> StoreResult<Vec<RecordedEvent>> {
        Ok(self.damage(inner.read_all(after_position, limit).await?))
    }

    async fn read_command(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        command_id: Uuid,
    ) -> StoreResult<Vec<RecordedEvent>> {
        Ok(self.damage(inner.read_command(stream, command_id).await?))
    }

    /// No combined first read (PostgreSQL's would pass the events undamaged): activations read
    /// the snapshot and then the stream, through `read_stream`.
    async fn read_start(
        &self,
        _: &Arc<dyn EventStore>,
        _: &StreamId,
        _: &dyn SnapshotStore,
        _: usize,
    ) -> StoreResult<Option<StreamStart>> {
        Ok(None)
    }
}

/// Hooks for a snapshot store that stores the first `intact` snapshots as given and flips a
/// bit in the bytes of every later one (saved either way: the snapshot writer saves with a
/// read-back).
struct CorruptingSnapshots {
    intact: AtomicU32,
}

impl CorruptingSnapshots {
    fn corrupt(&self, mut record: SnapshotRecord) -> SnapshotRecord {
        let intact = self
            .intact
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !intact {
            let mut bytes = record.bytes.to_vec();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x04;
            record.bytes = bytes.into();
        }
        record
    }
}

#[async_trait]
impl SnapshotHooks for CorruptingSnapshots {
    async fn save(
        &self,
        inner: &Arc<dyn SnapshotStore>,
        record: SnapshotRecord,
    ) -> StoreResult<()> {
        inner.save(self.corrupt(record)).await
    }
    async fn save_and_read_back(
        &self,
        inner: &Arc<dyn SnapshotStore>,
        record: SnapshotRecord,
    ) -> StoreResult<SnapshotRecord> {
        inner.save_and_read_back(self.corrupt(record)).await
    }
}

/// A snapshot strategy that panics whenever it is asked.
struct PanickingStrategy;

impl SnapshotStrategy<Tally> for PanickingStrategy {
    fn should_snapshot(&self, _: &SnapshotContext<'_, Tally>) -> bool {
        panic!("snapshot strategy panicked on purpose")
    }
}

// ---------------------------------------------------------------------------------------------
// The same command id twice
// ---------------------------------------------------------------------------------------------

on_both_backends! {
    a_command_sent_twice_is_applied_once => a_command_sent_twice_is_applied_once;
    a_retry_after_passivation_is_answered_from_the_replayed_window => a_retry_after_passivation_is_answered_from_the_replayed_window;
    a_retry_after_activation_from_a_snapshot_is_answered_from_the_snapshots_window => a_retry_after_activation_from_a_snapshot_is_answered_from_the_snapshots_window;
    a_retry_on_a_second_executor_is_a_duplicate => a_retry_on_a_second_executor_is_a_duplicate;
    beyond_the_window_a_retry_is_answered_as_a_duplicate_by_the_store => beyond_the_window_a_retry_is_answered_as_a_duplicate_by_the_store;
    the_window_forgets_by_age_but_the_store_still_catches_the_retry => the_window_forgets_by_age_but_the_store_still_catches_the_retry;
    a_rejected_command_is_not_remembered_and_its_retry_decides_again => a_rejected_command_is_not_remembered_and_its_retry_decides_again;
    a_command_deciding_nothing_is_not_remembered_and_its_retry_decides_again => a_command_deciding_nothing_is_not_remembered_and_its_retry_decides_again;
    a_retry_whose_stored_events_cannot_be_read_back_is_indeterminate => a_retry_whose_stored_events_cannot_be_read_back_is_indeterminate;
    a_retry_the_store_refuses_whose_events_cannot_be_read_back_is_indeterminate => a_retry_the_store_refuses_whose_events_cannot_be_read_back_is_indeterminate;
    a_retry_rejected_by_an_actor_behind_the_store_is_a_duplicate => a_retry_rejected_by_an_actor_behind_the_store_is_a_duplicate;
    a_retry_deciding_nothing_on_an_actor_behind_the_store_is_a_duplicate => a_retry_deciding_nothing_on_an_actor_behind_the_store_is_a_duplicate;
    a_retry_out_of_conflict_retries_on_an_actor_behind_the_store_is_a_duplicate => a_retry_out_of_conflict_retries_on_an_actor_behind_the_store_is_a_duplicate;
    only_an_id_that_may_be_a_retry_is_confirmed_against_the_store_before_a_rejection => only_an_id_that_may_be_a_retry_is_confirmed_against_the_store_before_a_rejection;
    a_command_past_its_deadline_is_expired_and_stores_nothing => a_command_past_its_deadline_is_expired_and_stores_nothing;
    commands_queued_past_their_deadline_are_dropped_and_never_stored => commands_queued_past_their_deadline_are_dropped_and_never_stored;
    a_timeout_too_long_to_add_to_a_clock_means_no_limit => a_timeout_too_long_to_add_to_a_clock_means_no_limit;
    an_append_outliving_the_deadline_is_indeterminate_and_its_retry_a_duplicate => an_append_outliving_the_deadline_is_indeterminate_and_its_retry_a_duplicate;
    a_store_indeterminate_after_committing_is_indeterminate_and_its_retry_a_duplicate => a_store_indeterminate_after_committing_is_indeterminate_and_its_retry_a_duplicate;
    a_store_indeterminate_without_committing_lets_the_retry_apply_once => a_store_indeterminate_without_committing_lets_the_retry_apply_once;
    a_panicking_snapshot_strategy_never_fails_a_stored_command => a_panicking_snapshot_strategy_never_fails_a_stored_command;
    a_snapshot_failing_verification_never_replaces_the_older_valid_one => a_snapshot_failing_verification_never_replaces_the_older_valid_one;
    a_refused_first_command_leaves_no_live_actor => a_refused_first_command_leaves_no_live_actor;
    the_state_of_a_live_actor_at_version_zero_is_not_found => the_state_of_a_live_actor_at_version_zero_is_not_found;
}

/// A rejection is confirmed against the store (an actor behind it may miss a retry's first
/// attempt) only when the command id may be a retry: a fresh id, made by the executor for this
/// call, costs no read; the caller's own id costs one read of the stream's version.
async fn only_an_id_that_may_be_a_retry_is_confirmed_against_the_store_before_a_rejection(
    stores: Stores,
) {
    let counting = CountingReads::wrap(&stores.events);
    let executor = executor_on(
        Arc::clone(&counting) as Arc<dyn EventStore>,
        Arc::clone(&stores.snapshots),
        AggregateSettings::new(),
    );
    let tag = tag();
    executor
        .execute::<Tally>("confirmed", add(&tag, 1))
        .await
        .unwrap();
    let before = counting.reads();
    let fresh = executor
        .execute::<Tally>("confirmed", spend(&tag, 100))
        .await;
    assert!(matches!(fresh, Err(CommandError::Rejected(_))), "{fresh:?}");
    assert_eq!(counting.reads(), before, "a fresh id reads nothing");
    let callers = executor
        .execute_with::<Tally>("confirmed", spend(&tag, 100), with_id(CommandId::new()))
        .await;
    assert!(
        matches!(callers, Err(CommandError::Rejected(_))),
        "{callers:?}"
    );
    assert_eq!(
        counting.reads(),
        before + 1,
        "the caller's id: one version read"
    );
}

/// The second send of a command id returns the first outcome (version and events, even when
/// other commands came in between and the retry carries another payload), decides nothing,
/// stores nothing and counts as a duplicate.
async fn a_command_sent_twice_is_applied_once(stores: Stores) {
    let executor = executor(&stores, AggregateSettings::new());
    let (tag, other) = (tag(), tag());
    let id = CommandId::new();
    let first = executor
        .execute_with::<Tally>("twice", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    executor
        .execute::<Tally>("twice", add(&other, 7))
        .await
        .unwrap();
    let second = executor
        .execute_with::<Tally>("twice", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    let changed_payload = executor
        .execute_with::<Tally>("twice", add(&tag, 999), with_id(id))
        .await
        .unwrap();

    assert!(!first.duplicate);
    assert_eq!(first.command_id, id);
    for retry in [&second, &changed_payload] {
        assert!(retry.duplicate, "{retry:?}");
        assert_eq!(retry.command_id, id);
        assert_eq!(retry.version, 1, "the original version");
        assert_eq!(retry.events, vec![TallyEvent::Added { amount: 5 }]);
    }
    assert_eq!(decisions(&tag), 1, "a duplicate is not decided again");
    let stored = stored(&*stores.events, "twice").await;
    assert_eq!(stored.len(), 2, "one copy of each command");
    assert_eq!(stored[0].command_id, Some(id.as_uuid()));
    assert_eq!(
        executor.state::<Tally>("twice").await.unwrap().state.total,
        12
    );
    let stats = stats(&executor);
    assert_eq!((stats.commands_succeeded, stats.commands_duplicate), (2, 2));
}

/// After passivation (no snapshot) the window is rebuilt from the replayed events: the retry is
/// answered without deciding.
async fn a_retry_after_passivation_is_answered_from_the_replayed_window(stores: Stores) {
    let executor = executor(&stores, no_automatic_snapshots());
    let tag = tag();
    let id = CommandId::new();
    executor
        .execute_with::<Tally>("passive", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(executor.passivate::<Tally>("passive").await.unwrap());
    let retry = executor
        .execute_with::<Tally>("passive", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.version, 1);
    assert_eq!(retry.events, vec![TallyEvent::Added { amount: 5 }]);
    assert_eq!(decisions(&tag), 1);
    let view = executor.state::<Tally>("passive").await.unwrap();
    assert_eq!(view.activation.snapshot_version(), None);
    assert_eq!(view.activation.events_replayed, 1);
    assert_eq!(stored(&*stores.events, "passive").await.len(), 1);
}

/// A command older than the snapshot an aggregate activates from (so no event of it is
/// replayed) is still recognised without deciding: snapshots carry the window.
async fn a_retry_after_activation_from_a_snapshot_is_answered_from_the_snapshots_window(
    stores: Stores,
) {
    let executor = executor(&stores, no_automatic_snapshots());
    let (tag, other) = (tag(), tag());
    let id = CommandId::new();
    executor
        .execute_with::<Tally>("snap", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    for amount in 1..=3 {
        executor
            .execute::<Tally>("snap", add(&other, amount))
            .await
            .unwrap();
    }
    assert_eq!(executor.snapshot_now::<Tally>("snap").await.unwrap(), 4);
    assert!(executor.passivate::<Tally>("snap").await.unwrap());

    let retry = executor
        .execute_with::<Tally>("snap", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    let view = executor.state::<Tally>("snap").await.unwrap();
    assert_eq!(
        view.activation.snapshot_version(),
        Some(4),
        "activated from the snapshot"
    );
    assert_eq!(view.activation.events_replayed, 0);
    assert!(retry.duplicate);
    assert_eq!(retry.version, 1);
    assert_eq!(retry.events, vec![TallyEvent::Added { amount: 5 }]);
    assert_eq!(decisions(&tag), 1, "answered from the snapshot's window");
    assert_eq!(stored(&*stores.events, "snap").await.len(), 4);
}

/// Another executor on the same stores (another process) recognises the command too.
async fn a_retry_on_a_second_executor_is_a_duplicate(stores: Stores) {
    let first = executor(&stores, AggregateSettings::new());
    let second = executor(&stores, AggregateSettings::new());
    let tag = tag();
    let id = CommandId::new();
    let original = first
        .execute_with::<Tally>("shared", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    let retry = second
        .execute_with::<Tally>("shared", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(!original.duplicate);
    assert!(retry.duplicate);
    assert_eq!(retry.version, original.version);
    assert_eq!(retry.events, original.events);
    assert_eq!(decisions(&tag), 1);
    assert_eq!(stored(&*stores.events, "shared").await.len(), 1);
    assert_eq!(stats(&second).commands_duplicate, 1);
}

/// With a window of one command, a retry of an older one is decided again, but its append
/// collides with the stored events: it is answered as a duplicate with the original version
/// and all its events, and stores nothing.
async fn beyond_the_window_a_retry_is_answered_as_a_duplicate_by_the_store(stores: Stores) {
    let window = DedupWindow {
        max_commands: 1,
        max_age: None,
    };
    let executor = executor(&stores, AggregateSettings::new().dedup(window));
    let (tag, other) = (tag(), tag());
    let id = CommandId::new();
    let many = TallyCommand::AddMany {
        tag: tag.clone(),
        amounts: vec![1, 2, 3],
    };
    executor
        .execute_with::<Tally>("beyond", many.clone(), with_id(id))
        .await
        .unwrap();
    executor
        .execute::<Tally>("beyond", add(&other, 10))
        .await
        .unwrap();

    let retry = executor
        .execute_with::<Tally>("beyond", many, with_id(id))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.version, 3);
    assert_eq!(
        retry.events,
        [1, 2, 3].map(|amount| TallyEvent::Added { amount })
    );
    assert_eq!(decisions(&tag), 2, "the window forgot it: decided again");
    assert_eq!(stored(&*stores.events, "beyond").await.len(), 4);
    assert_eq!(
        executor.state::<Tally>("beyond").await.unwrap().state.total,
        16
    );
    let stats = stats(&executor);
    assert_eq!((stats.commands_succeeded, stats.commands_duplicate), (2, 1));
}

/// A command older than `max_age` leaves the window (on the next command), and its retry is
/// then caught by the store.
async fn the_window_forgets_by_age_but_the_store_still_catches_the_retry(stores: Stores) {
    let window = DedupWindow {
        max_commands: 128,
        max_age: Some(Duration::from_millis(300)),
    };
    let executor = executor(&stores, AggregateSettings::new().dedup(window));
    let (tag, other) = (tag(), tag());
    let id = CommandId::new();
    executor
        .execute_with::<Tally>("aged", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    executor
        .execute::<Tally>("aged", add(&other, 1))
        .await
        .unwrap();
    let retry = executor
        .execute_with::<Tally>("aged", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.version, 1);
    assert_eq!(decisions(&tag), 2, "forgotten by age: decided again");
    assert_eq!(stored(&*stores.events, "aged").await.len(), 2);
}

/// A rejection is not an outcome to replay: the same command id, sent again once the state
/// allows it, is decided again and applied.
async fn a_rejected_command_is_not_remembered_and_its_retry_decides_again(stores: Stores) {
    let executor = executor(&stores, AggregateSettings::new());
    let (tag, other) = (tag(), tag());
    let id = CommandId::new();
    executor
        .execute::<Tally>("refused", add(&other, 5))
        .await
        .unwrap();
    let refused = executor
        .execute_with::<Tally>("refused", spend(&tag, 10), with_id(id))
        .await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(NotEnough))),
        "{refused:?}"
    );
    executor
        .execute::<Tally>("refused", add(&other, 10))
        .await
        .unwrap();
    let retry = executor
        .execute_with::<Tally>("refused", spend(&tag, 10), with_id(id))
        .await
        .unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.version, 3);
    assert_eq!(retry.events, vec![TallyEvent::Spent { amount: 10 }]);
    assert_eq!(decisions(&tag), 2);
    assert_eq!(stored(&*stores.events, "refused").await.len(), 3);
}

/// A command that decided no events stored nothing to recognise it by: its retry is decided
/// again (and is not a duplicate).
async fn a_command_deciding_nothing_is_not_remembered_and_its_retry_decides_again(stores: Stores) {
    let executor = executor(&stores, AggregateSettings::new());
    let (tag, other) = (tag(), tag());
    let id = CommandId::new();
    executor
        .execute::<Tally>("idle", add(&other, 1))
        .await
        .unwrap();
    for attempt in 1..=2 {
        let outcome = executor
            .execute_with::<Tally>(
                "idle",
                TallyCommand::Nothing { tag: tag.clone() },
                with_id(id),
            )
            .await
            .unwrap();
        assert!(!outcome.duplicate);
        assert!(outcome.events.is_empty());
        assert_eq!(outcome.version, 1);
        assert_eq!(decisions(&tag), attempt);
    }
    assert_eq!(stored(&*stores.events, "idle").await.len(), 1);
}

/// A retry found in the window whose stored events cannot be read back is stored, so its answer
/// is indeterminate (never "not stored"), and nothing is stored again.
async fn a_retry_whose_stored_events_cannot_be_read_back_is_indeterminate(stores: Stores) {
    let unreadable = UnreadableEvents::new(&stores.events);
    let executor = executor_on(
        Arc::clone(&unreadable) as Arc<dyn EventStore>,
        Arc::clone(&stores.snapshots),
        AggregateSettings::new(),
    );
    let tag = tag();
    let id = CommandId::new();
    executor
        .execute_with::<Tally>("unreadable", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    unreadable.make_unreadable();

    let retry = executor
        .execute_with::<Tally>("unreadable", add(&tag, 5), with_id(id))
        .await;
    let unknown = indeterminate(retry);
    assert_eq!(unknown.command_id, id);
    assert!(
        matches!(unknown.cause, ExecutorError::Activation(_)),
        "{:?}",
        unknown.cause
    );
    assert_eq!(decisions(&tag), 1, "found in the window: not decided again");
    assert_eq!(stored(&*stores.events, "unreadable").await.len(), 1);
}

/// A retry beyond the window, refused by the store as already applied, whose stored events
/// cannot be read back is indeterminate too, and nothing is stored again.
async fn a_retry_the_store_refuses_whose_events_cannot_be_read_back_is_indeterminate(
    stores: Stores,
) {
    let unreadable = UnreadableEvents::new(&stores.events);
    let window = DedupWindow {
        max_commands: 1,
        max_age: None,
    };
    let executor = executor_on(
        Arc::clone(&unreadable) as Arc<dyn EventStore>,
        Arc::clone(&stores.snapshots),
        AggregateSettings::new().dedup(window),
    );
    let (tag, other) = (tag(), tag());
    let id = CommandId::new();
    executor
        .execute_with::<Tally>("unreadable-old", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    executor
        .execute::<Tally>("unreadable-old", add(&other, 10))
        .await
        .unwrap();
    unreadable.make_unreadable();

    let retry = executor
        .execute_with::<Tally>("unreadable-old", add(&tag, 5), with_id(id))
        .await;
    assert_eq!(indeterminate(retry).command_id, id);
    assert_eq!(decisions(&tag), 2, "the window forgot it: decided again");
    assert_eq!(stored(&*stores.events, "unreadable-old").await.len(), 2);
}

/// Two executors on one store: `behind`'s actor for `id` is live at version 1 while `ahead`
/// stores two more commands, the second with `command_id`. Returns both executors.
async fn one_actor_behind_the_store(
    stores: &Stores,
    behind_settings: AggregateSettings<Tally>,
    id: &str,
    tag: &str,
    command: TallyCommand,
    command_id: CommandId,
) -> (Executor, Executor, Committed<Tally>) {
    let ahead = executor(stores, AggregateSettings::new());
    let behind = executor(stores, behind_settings);
    behind.execute::<Tally>(id, add(tag, 1)).await.unwrap();
    ahead.execute::<Tally>(id, add(tag, 10)).await.unwrap();
    let original = ahead
        .execute_with::<Tally>(id, command, with_id(command_id))
        .await
        .unwrap();
    assert_eq!(original.version, 3);
    assert!(
        behind.is_live::<Tally>(id),
        "the actor behind is still live"
    );
    (ahead, behind, original)
}

/// A retry on an executor whose live actor is behind the store (another executor stored the
/// first attempt) is answered with the original outcome, not with a rejection decided on the
/// old state.
async fn a_retry_rejected_by_an_actor_behind_the_store_is_a_duplicate(stores: Stores) {
    let (tag, id) = (tag(), CommandId::new());
    let (_ahead, behind, original) = one_actor_behind_the_store(
        &stores,
        AggregateSettings::new(),
        "behind-rejected",
        &tag,
        spend(&tag, 5),
        id,
    )
    .await;
    let retry = behind
        .execute_with::<Tally>("behind-rejected", spend(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(retry.version, original.version);
    assert_eq!(retry.events, vec![TallyEvent::Spent { amount: 5 }]);
    assert_eq!(stored(&*stores.events, "behind-rejected").await.len(), 3);
    assert_eq!(stats(&behind).commands_duplicate, 1);
}

/// The same for a retry that decides nothing on the old state: the original outcome, not an
/// empty success.
async fn a_retry_deciding_nothing_on_an_actor_behind_the_store_is_a_duplicate(stores: Stores) {
    let (tag, id) = (tag(), CommandId::new());
    let cap = || TallyCommand::Cap {
        tag: tag.clone(),
        max: 5,
    };
    let (_ahead, behind, original) = one_actor_behind_the_store(
        &stores,
        AggregateSettings::new(),
        "behind-nothing",
        &tag,
        cap(),
        id,
    )
    .await;
    assert_eq!(original.events, vec![TallyEvent::Spent { amount: 6 }]);
    let retry = behind
        .execute_with::<Tally>("behind-nothing", cap(), with_id(id))
        .await
        .unwrap();
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(retry.version, original.version);
    assert_eq!(retry.events, original.events);
    assert_eq!(stored(&*stores.events, "behind-nothing").await.len(), 3);
}

/// The same for a retry whose append conflicts with no conflict retries left: the original
/// outcome, not `NotStored(Conflict)`.
async fn a_retry_out_of_conflict_retries_on_an_actor_behind_the_store_is_a_duplicate(
    stores: Stores,
) {
    let (tag, id) = (tag(), CommandId::new());
    let (_ahead, behind, original) = one_actor_behind_the_store(
        &stores,
        AggregateSettings::new().max_conflict_retries(0),
        "behind-conflict",
        &tag,
        add(&tag, 5),
        id,
    )
    .await;
    let retry = behind
        .execute_with::<Tally>("behind-conflict", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(retry.version, original.version);
    assert_eq!(retry.events, vec![TallyEvent::Added { amount: 5 }]);
    assert_eq!(stored(&*stores.events, "behind-conflict").await.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Deadlines and indeterminate outcomes
// ---------------------------------------------------------------------------------------------

/// A command whose deadline has passed (or with no time at all) is dropped before `decide`:
/// `NotStored(Expired)` naming the command, nothing stored, counted as expired.
async fn a_command_past_its_deadline_is_expired_and_stores_nothing(stores: Stores) {
    let executor = executor(&stores, AggregateSettings::new());
    let (tag, other) = (tag(), tag());
    executor
        .execute::<Tally>("late", add(&other, 1))
        .await
        .unwrap();
    let past = tokio::time::Instant::now() - Duration::from_secs(1);
    let options = [
        ("a past deadline", CommandOptions::new().deadline(past)),
        (
            "a zero timeout",
            CommandOptions::new().timeout(Duration::ZERO),
        ),
    ];
    for (what, options) in options {
        let id = CommandId::new();
        let outcome = executor
            .execute_with::<Tally>("late", add(&tag, 5), options.command_id(id))
            .await;
        match outcome {
            Err(CommandError::NotStored(ExecutorError::Expired {
                id: aggregate,
                command_id,
            })) => {
                assert_eq!(aggregate, "late");
                assert_eq!(command_id, id, "{what}");
            }
            other => panic!("{what}: expected NotStored(Expired), got {other:?}"),
        }
    }
    assert_eq!(decisions(&tag), 0, "never decided");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stored(&*stores.events, "late").await.len(), 1);
    assert_eq!(stats(&executor).commands_expired, 2);
}

/// `Duration::MAX` as a command's timeout or as the type's call timeout is "no limit": the
/// command is applied once and answered, rather than overflowing the clock (a panic).
async fn a_timeout_too_long_to_add_to_a_clock_means_no_limit(stores: Stores) {
    let unlimited = AggregateSettings::new().runtime(RuntimeConfig {
        call_timeout: Duration::MAX,
        ..RuntimeConfig::default()
    });
    for (what, executor) in [
        (
            "default settings",
            executor(&stores, AggregateSettings::new()),
        ),
        ("an unlimited call timeout", executor(&stores, unlimited)),
    ] {
        let (id, tag) = (format!("unlimited-{}", tag()), tag());
        let options = CommandOptions::new().timeout(Duration::MAX);
        let committed = executor
            .execute_with::<Tally>(&id, add(&tag, 3), options)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(committed.version, 1, "{what}");
        let committed = executor
            .execute::<Tally>(&id, add(&tag, 4))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(committed.version, 2, "{what}");
        assert_eq!(decisions(&tag), 2, "{what}: each decided once");
        assert_eq!(
            executor.state::<Tally>(&id).await.unwrap().version,
            2,
            "{what}"
        );
        assert_eq!(stored(&*stores.events, &id).await.len(), 2, "{what}");
        executor.shutdown().await;
    }
}

/// Commands waiting behind a slow append past their deadline are dropped when their turn comes:
/// never decided, never stored (not even later), counted as expired; a retry with the same id
/// then applies them once.
async fn commands_queued_past_their_deadline_are_dropped_and_never_stored(stores: Stores) {
    let slow = FaultyEvents::new(&stores.events, AppendFault::None, 0);
    // The first command's append waits until the queued commands' callers have given up (their
    // deadlines passed), however slow the machine.
    slow.hold();
    let executor = executor_on(
        Arc::clone(&slow) as Arc<dyn EventStore>,
        Arc::clone(&stores.snapshots),
        AggregateSettings::new(),
    );
    let (first_tag, queued_tag) = (tag(), tag());
    let first = {
        let executor = executor.clone();
        let command = add(&first_tag, 1);
        tokio::spawn(async move {
            let options = CommandOptions::new().timeout(Duration::from_secs(10));
            executor
                .execute_with::<Tally>("queue", command, options)
                .await
        })
    };
    eventually("the first command is appending", || slow.started() == 1).await;
    let ids = [CommandId::new(), CommandId::new()];
    let queued: Vec<_> = ids
        .iter()
        .map(|&id| {
            let executor = executor.clone();
            let command = add(&queued_tag, 100);
            tokio::spawn(async move {
                let options = with_id(id).timeout(Duration::from_millis(150));
                executor
                    .execute_with::<Tally>("queue", command, options)
                    .await
            })
        })
        .collect();
    for (outcome, id) in futures::future::join_all(queued).await.into_iter().zip(ids) {
        match outcome.unwrap() {
            Err(CommandError::NotStored(ExecutorError::Expired { command_id, .. }))
            | Err(CommandError::Indeterminate(Indeterminate { command_id, .. })) => {
                assert_eq!(command_id, id)
            }
            other => panic!("expected the queued command to fail unstored, got {other:?}"),
        }
    }
    slow.release();
    assert_eq!(first.await.unwrap().unwrap().version, 1);
    // Counted by the actor as it drops each: after that nothing of theirs can be stored.
    eventually("the actor dropped both queued commands", || {
        stats(&executor).commands_expired == 2
    })
    .await;
    assert_eq!(
        stored(&*stores.events, "queue").await.len(),
        1,
        "only the first command"
    );
    assert_eq!(decisions(&queued_tag), 0, "dropped before decide");
    assert_eq!(stats(&executor).commands_expired, 2);

    let retry = executor
        .execute_with::<Tally>("queue", add(&queued_tag, 100), with_id(ids[0]))
        .await
        .unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.version, 2);
    assert_eq!(decisions(&queued_tag), 1);
}

/// An append still running at the deadline is indeterminate (it may commit, and here it does):
/// the caller learns the command id, and the retry with it, once the append committed, is a
/// duplicate that decides and stores nothing.
async fn an_append_outliving_the_deadline_is_indeterminate_and_its_retry_a_duplicate(
    stores: Stores,
) {
    let slow = FaultyEvents::new(&stores.events, AppendFault::None, 0);
    let executor = executor_on(
        Arc::clone(&slow) as Arc<dyn EventStore>,
        Arc::clone(&stores.snapshots),
        AggregateSettings::new(),
    );
    let (tag, other) = (tag(), tag());
    // Activated and warm, so the deadline can only pass during the append: the append is held
    // until the caller has its answer, and the deadline leaves two seconds to start it (a
    // loaded machine stalls the test for several hundred milliseconds).
    executor
        .execute::<Tally>("outlived", add(&other, 1))
        .await
        .unwrap();
    slow.hold();
    let id = CommandId::new();
    let outcome = executor
        .execute_with::<Tally>(
            "outlived",
            add(&tag, 5),
            with_id(id).timeout(Duration::from_secs(2)),
        )
        .await;
    assert_eq!(slow.started(), 2, "the append started before the deadline");
    slow.release();
    let unknown = indeterminate(outcome);
    assert_eq!(unknown.command_id, id);
    assert_eq!(unknown.id, "outlived");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stored(&*stores.events, "outlived").await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow append never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retry = executor
        .execute_with::<Tally>("outlived", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.version, 2);
    assert_eq!(retry.events, vec![TallyEvent::Added { amount: 5 }]);
    assert_eq!(decisions(&tag), 1);
    assert_eq!(stored(&*stores.events, "outlived").await.len(), 2);
    let stats = stats(&executor);
    assert_eq!(
        (stats.commands_indeterminate, stats.commands_duplicate),
        (1, 1)
    );
}

/// A store that committed but lost its answer (`StoreError::Indeterminate`) makes the command
/// indeterminate; the retry with the same id is a duplicate, and the events are stored once.
async fn a_store_indeterminate_after_committing_is_indeterminate_and_its_retry_a_duplicate(
    stores: Stores,
) {
    let faulty = FaultyEvents::new(&stores.events, AppendFault::IndeterminateAfterCommit, 1);
    let executor = executor_on(
        faulty,
        Arc::clone(&stores.snapshots),
        AggregateSettings::new(),
    );
    let tag = tag();
    let id = CommandId::new();
    let outcome = executor
        .execute_with::<Tally>("lost-answer", add(&tag, 5), with_id(id))
        .await;
    let unknown = indeterminate(outcome);
    assert_eq!(unknown.command_id, id);
    assert!(
        matches!(
            unknown.cause,
            ExecutorError::Store(StoreError::Indeterminate { .. })
        ),
        "{:?}",
        unknown.cause
    );
    let retry = executor
        .execute_with::<Tally>("lost-answer", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.version, 1);
    assert_eq!(retry.events, vec![TallyEvent::Added { amount: 5 }]);
    assert_eq!(decisions(&tag), 1);
    assert_eq!(stored(&*stores.events, "lost-answer").await.len(), 1);
    assert_eq!(stats(&executor).commands_indeterminate, 1);
}

/// A store that lost the request (`StoreError::Indeterminate`, nothing committed) makes the
/// command indeterminate; the retry with the same id applies it, once.
async fn a_store_indeterminate_without_committing_lets_the_retry_apply_once(stores: Stores) {
    let faulty = FaultyEvents::new(&stores.events, AppendFault::IndeterminateWithoutCommit, 1);
    let executor = executor_on(
        faulty,
        Arc::clone(&stores.snapshots),
        AggregateSettings::new(),
    );
    let tag = tag();
    let id = CommandId::new();
    let outcome = executor
        .execute_with::<Tally>("lost-request", add(&tag, 5), with_id(id))
        .await;
    assert_eq!(indeterminate(outcome).command_id, id);
    assert!(stored(&*stores.events, "lost-request").await.is_empty());
    let retry = executor
        .execute_with::<Tally>("lost-request", add(&tag, 5), with_id(id))
        .await
        .unwrap();
    assert!(!retry.duplicate, "nothing was stored the first time");
    assert_eq!(retry.version, 1);
    assert_eq!(decisions(&tag), 2);
    let stored = stored(&*stores.events, "lost-request").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].command_id, Some(id.as_uuid()));
}

// ---------------------------------------------------------------------------------------------
// After the append: nothing turns a stored command into a failure
// ---------------------------------------------------------------------------------------------

/// A snapshot strategy that panics after a stored command is caught: the command answers Ok,
/// its event is stored, the failure is counted and the actor serves the next command.
async fn a_panicking_snapshot_strategy_never_fails_a_stored_command(stores: Stores) {
    let executor = executor(
        &stores,
        AggregateSettings::new().strategy(PanickingStrategy),
    );
    let tag = tag();
    for version in 1..=2 {
        let outcome = executor
            .execute::<Tally>("panicky", add(&tag, 5))
            .await
            .unwrap();
        assert_eq!(outcome.version, version);
        assert_eq!(
            stored(&*stores.events, "panicky").await.len() as u64,
            version
        );
        assert_eq!(stats(&executor).snapshots_failed, version);
        assert!(
            executor.is_live::<Tally>("panicky"),
            "the actor keeps serving"
        );
    }
    let stats = executor.stats_of::<Tally>().unwrap();
    assert_eq!(stats.runtime.crashes, 0);
    assert_eq!(stats.aggregate.commands_succeeded, 2);
}

/// A new snapshot that does not read back intact never lets retention delete the older valid
/// one, and activation uses the older one.
async fn a_snapshot_failing_verification_never_replaces_the_older_valid_one(stores: Stores) {
    let snapshots = Arc::new(HookedSnapshots::new(
        Arc::clone(&stores.snapshots),
        CorruptingSnapshots {
            intact: AtomicU32::new(1),
        },
    ));
    let settings = no_automatic_snapshots().retention(Retention {
        keep_newest: 1,
        max_age: None,
    });
    let executor = executor_on(Arc::clone(&stores.events), snapshots, settings);
    let tag = tag();
    for _ in 0..2 {
        executor
            .execute::<Tally>("kept", add(&tag, 1))
            .await
            .unwrap();
    }
    assert_eq!(executor.snapshot_now::<Tally>("kept").await.unwrap(), 2);
    for _ in 0..2 {
        executor
            .execute::<Tally>("kept", add(&tag, 1))
            .await
            .unwrap();
    }
    let corrupt = executor.snapshot_now::<Tally>("kept").await;
    assert!(
        corrupt.is_err(),
        "the damaged snapshot fails verification: {corrupt:?}"
    );
    let listed: Vec<u64> = stores
        .snapshots
        .list(&stream("kept"), 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(listed, vec![4, 2], "the valid snapshot at 2 is kept");
    assert_eq!(stats(&executor).snapshots_failed, 1);

    assert!(executor.passivate::<Tally>("kept").await.unwrap());
    let view = executor.state::<Tally>("kept").await.unwrap();
    assert_eq!(view.activation.snapshot_version(), Some(2));
    assert_eq!(view.activation.snapshots_skipped, 1);
    assert_eq!((view.version, view.state.total), (4, 4));
}

// ---------------------------------------------------------------------------------------------
// Unknown ids
// ---------------------------------------------------------------------------------------------

/// A refused first command to an id with no events leaves no live actor behind, and the id
/// reads as not found.
async fn a_refused_first_command_leaves_no_live_actor(stores: Stores) {
    let executor = executor(&stores, AggregateSettings::new());
    let refused = executor.execute::<Tally>("ghost", spend(&tag(), 10)).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(NotEnough))),
        "{refused:?}"
    );
    eventually("the actor passivates", || {
        !executor.is_live::<Tally>("ghost")
    })
    .await;
    eventually("no live actor is counted", || {
        executor.stats_of::<Tally>().unwrap().runtime.live == 0
    })
    .await;
    let state = executor.state::<Tally>("ghost").await;
    assert!(
        matches!(state, Err(ExecutorError::NotFound { .. })),
        "{state:?}"
    );
    assert!(stored(&*stores.events, "ghost").await.is_empty());
}

/// The live actor of an id with no events (its first command still appending) answers a state
/// read with `NotFound`, not with an empty state at version 0.
async fn the_state_of_a_live_actor_at_version_zero_is_not_found(stores: Stores) {
    let failing = FaultyEvents::new(&stores.events, AppendFault::Unavailable, 1);
    // The first append waits until released below, however slow the machine: until then the
    // actor is live at version 0 with its first command appending.
    failing.hold();
    let executor = executor_on(
        Arc::clone(&failing) as Arc<dyn EventStore>,
        Arc::clone(&stores.snapshots),
        AggregateSettings::new(),
    );
    let command = {
        let executor = executor.clone();
        let command = add(&tag(), 5);
        tokio::spawn(async move { executor.execute::<Tally>("zero", command).await })
    };
    eventually("the first command is appending", || failing.started() == 1).await;
    assert!(executor.is_live::<Tally>("zero"));
    // Asked while the append is held, of the live actor at version 0. It may answer only once
    // the command it is handling is done: the append is released meanwhile.
    let read = executor.state::<Tally>("zero");
    tokio::pin!(read);
    let early = tokio::time::timeout(Duration::from_millis(100), &mut read).await;
    assert!(executor.is_live::<Tally>("zero"), "live while appending");
    failing.release();
    let state = match early {
        Ok(state) => state,
        Err(_) => read.await,
    };
    assert!(
        matches!(state, Err(ExecutorError::NotFound { .. })),
        "{state:?}"
    );
    let outcome = command.await.unwrap();
    assert!(
        matches!(
            outcome,
            Err(CommandError::NotStored(ExecutorError::Store(
                StoreError::Unavailable { .. }
            )))
        ),
        "{outcome:?}"
    );
}

/// A thousand refused commands to random unknown ids leave no live actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_refused_commands_to_unknown_ids_leave_no_live_actor() {
    let stores = crate::common::memory();
    let executor = executor(&stores, AggregateSettings::new());
    let tag = tag();
    for _ in 0..10 {
        let refusals = (0..100).map(|_| {
            let id = Uuid::now_v7().to_string();
            let executor = executor.clone();
            let command = spend(&tag, 1);
            async move { executor.execute::<Tally>(&id, command).await }
        });
        for outcome in futures::future::join_all(refusals).await {
            assert!(
                matches!(outcome, Err(CommandError::Rejected(NotEnough))),
                "{outcome:?}"
            );
        }
    }
    eventually("every actor passivates", || {
        executor.stats_of::<Tally>().unwrap().runtime.live == 0
    })
    .await;
    let stats = executor.stats_of::<Tally>().unwrap();
    assert_eq!(stats.runtime.activations, 1_000);
    assert_eq!(stats.aggregate.commands_rejected, 1_000);
}
