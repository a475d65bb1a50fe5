//! What a command's caller is told when the actor cannot simply decide and store: a caller
//! that left while the actor read the store, stored events that cannot be decoded for a
//! retry's answer, and a deadline that passes while the store is slow. In memory only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aggregate_actors::event_stores::testing::{Hooked, StoreHooks};
use aggregate_actors::event_stores::{
    AppendReceipt, EventStore, InMemoryEventStore, InMemorySnapshotStore, NewEvent, ReadQuery,
    RecordedEvent, SnapshotStore, StoreResult, StreamId, StreamStart,
};
use aggregate_actors::{
    Aggregate, AggregateStats, CommandError, CommandId, CommandOptions, Context, Executor,
    ExecutorError, Indeterminate,
};
use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize};

struct Counter;

#[derive(Debug, Clone)]
enum Cmd {
    Add(u64),
    /// Stores an event that panics whenever it is decoded.
    Mark,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ev {
    Added {
        amount: u64,
    },
    Marked {
        #[serde(deserialize_with = "panic_on_decode")]
        mark: u64,
    },
}

/// User decoding that panics: an upcaster or `Deserialize` with a bug.
fn panic_on_decode<'de, D: Deserializer<'de>>(_: D) -> Result<u64, D::Error> {
    panic!("decoding a Marked event panicked on purpose")
}

#[derive(Debug, thiserror::Error)]
#[error("never refused")]
struct Never;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = Cmd;
    type Event = Ev;
    type State = u64;
    type Error = Never;

    fn decide(_: &u64, command: &Cmd, _: &mut Context<'_, Self>) -> Result<Vec<Ev>, Never> {
        Ok(vec![match command {
            Cmd::Add(amount) => Ev::Added { amount: *amount },
            Cmd::Mark => Ev::Marked { mark: 1 },
        }])
    }

    fn apply(total: &mut u64, event: &Ev) {
        if let Ev::Added { amount } = event {
            *total += amount;
        }
    }
}

/// How long a slowed store call takes: far longer than the callers below wait.
const SLOW: Duration = Duration::from_millis(700);

/// Slows reads or appends while switched on; counts the slowed reads that finished.
#[derive(Default)]
struct Slow {
    reads: AtomicBool,
    appends: AtomicBool,
    slow_reads_done: AtomicU64,
}

impl Slow {
    async fn read_pause(&self) -> bool {
        let slow = self.reads.load(Ordering::SeqCst);
        if slow {
            tokio::time::sleep(SLOW).await;
        }
        slow
    }
}

#[async_trait]
impl StoreHooks for Slow {
    async fn read_stream(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        query: ReadQuery,
    ) -> StoreResult<Vec<RecordedEvent>> {
        let slowed = self.read_pause().await;
        let read = inner.read_stream(stream, query).await;
        if slowed {
            self.slow_reads_done.fetch_add(1, Ordering::SeqCst);
        }
        read
    }

    async fn read_start(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        snapshots: &dyn SnapshotStore,
        page_size: usize,
    ) -> StoreResult<Option<StreamStart>> {
        let slowed = self.read_pause().await;
        let read = inner.read_start(stream, snapshots, page_size).await;
        if slowed {
            self.slow_reads_done.fetch_add(1, Ordering::SeqCst);
        }
        read
    }

    async fn append(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendReceipt> {
        if self.appends.load(Ordering::SeqCst) {
            tokio::time::sleep(SLOW).await;
        }
        inner.append(stream, expected_version, events).await
    }
}

fn slow_store() -> Arc<Hooked<Slow>> {
    Arc::new(Hooked::new(
        Arc::new(InMemoryEventStore::new()),
        Slow::default(),
    ))
}

fn executor(store: &Arc<Hooked<Slow>>) -> Executor {
    Executor::builder(
        Arc::clone(store) as Arc<dyn EventStore>,
        Arc::new(InMemorySnapshotStore::new()),
    )
    .register::<Counter>(Default::default())
    .build()
    .unwrap()
}

fn stats(executor: &Executor) -> AggregateStats {
    executor.stats_of::<Counter>().unwrap().aggregate
}

fn stream(id: &str) -> StreamId {
    StreamId::new(Counter::TYPE, id).unwrap()
}

async fn eventually(what: &str, done: impl Fn() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < give_up, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn timeout_of<T: std::fmt::Debug>(outcome: Result<T, CommandError<Never>>) -> Duration {
    match outcome {
        Err(CommandError::Indeterminate(Indeterminate {
            cause: ExecutorError::Timeout { after, .. },
            ..
        })) => after,
        other => panic!("expected an indeterminate timeout, got {other:?}"),
    }
}

/// The actor learns of a conflict, so it reloads the stream before deciding again; its caller
/// leaves during that slow read. The command is then dropped before `decide`: nothing of it is
/// stored, and it is counted as expired, like one whose caller left while it was queued.
#[tokio::test]
async fn a_command_whose_caller_left_while_the_actor_caught_up_is_not_decided() {
    let store = slow_store();
    let (here, elsewhere) = (executor(&store), executor(&store));
    here.execute::<Counter>("c", Cmd::Add(1)).await.unwrap();
    // Appended behind this executor's actor, which still believes version 1.
    let behind = elsewhere
        .execute::<Counter>("c", Cmd::Add(1))
        .await
        .unwrap();
    assert_eq!(behind.version, 2);

    store.reads.store(true, Ordering::SeqCst);
    let caller = tokio::time::timeout(
        Duration::from_millis(100),
        here.execute::<Counter>("c", Cmd::Add(10)),
    )
    .await;
    assert!(caller.is_err(), "the caller left before the answer");
    eventually("the actor finished the command", || {
        let stats = stats(&here);
        stats.commands_succeeded + stats.commands_expired == 2
    })
    .await;

    assert_eq!(stats(&here).conflicts, 1, "it went back to the store");
    assert!(store.slow_reads_done.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        store.inner().stream_version(&stream("c")).await.unwrap(),
        2,
        "nothing stored for the command whose caller left"
    );
    assert_eq!(stats(&here).commands_expired, 1);
    assert_eq!(stats(&here).commands_succeeded, 1);
}

/// Answering a retry decodes the first attempt's stored events, user code that may panic. The
/// command is stored all the same, so the retry is indeterminate (never "not stored", which
/// would invite a caller to give up or decide differently), and its events are stored once.
#[tokio::test]
async fn a_retried_command_whose_stored_events_panic_on_decode_is_indeterminate_not_not_stored() {
    let store = slow_store();
    let executor = executor(&store);
    let id = CommandId::new();
    let with_id = || CommandOptions::new().command_id(id);
    let first = executor
        .execute_with::<Counter>("m", Cmd::Mark, with_id())
        .await
        .unwrap();
    assert_eq!(first.version, 1);

    let retry = executor
        .execute_with::<Counter>("m", Cmd::Mark, with_id())
        .await;
    let error = retry.expect_err("its events cannot be decoded");
    assert!(error.is_indeterminate(), "{error:?}");
    assert!(
        error.to_string().contains("panicked"),
        "the answer says why: {error}"
    );
    let stored = store
        .inner()
        .read_stream(&stream("m"), ReadQuery::all())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "the command's event, once");
    assert_eq!(stats(&executor).commands_indeterminate, 1);
}

/// A 200 ms call that runs out during a slow append, or while reading back a duplicate's
/// events, reports its own 200 ms, not the type's 30 s call timeout. (The actor's answer races
/// the executor's own timeout, which reports the budget already and fires up to a tick of its
/// deadline ring later: several rounds make sure the actor's answer is among those checked.)
#[tokio::test]
async fn a_timeout_reports_the_callers_own_budget() {
    const ROUNDS: usize = 5;
    let budget = Duration::from_millis(200);
    let reported_ok = |after: Duration| after <= budget && after >= budget / 2;
    let store = slow_store();
    let executor = executor(&store);
    for round in 0..ROUNDS {
        let id = format!("append-{round}");
        // Activated first, so the budget runs out in the append.
        executor.execute::<Counter>(&id, Cmd::Add(1)).await.unwrap();
        store.appends.store(true, Ordering::SeqCst);
        let appending = executor
            .execute_with::<Counter>(&id, Cmd::Add(1), CommandOptions::new().timeout(budget))
            .await;
        store.appends.store(false, Ordering::SeqCst);
        let after = timeout_of(appending);
        assert!(
            reported_ok(after),
            "an append past the deadline reports {after:?}"
        );
    }
    for round in 0..ROUNDS {
        let id = format!("duplicate-{round}");
        let command_id = CommandId::new();
        let with_id = || CommandOptions::new().command_id(command_id);
        executor
            .execute_with::<Counter>(&id, Cmd::Add(1), with_id())
            .await
            .unwrap();
        store.reads.store(true, Ordering::SeqCst);
        let reading_back = executor
            .execute_with::<Counter>(&id, Cmd::Add(1), with_id().timeout(budget))
            .await;
        store.reads.store(false, Ordering::SeqCst);
        let after = timeout_of(reading_back);
        assert!(
            reported_ok(after),
            "a duplicate's read past the deadline reports {after:?}"
        );
    }
}
