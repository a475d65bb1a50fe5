//! Commands and state reads for ids served by another node are forwarded to it and answered
//! from there, with the command id carried so a lost answer is retried exactly once; a node
//! that does not serve the id (any more) makes the caller look the route up again.
//!
//! Two executors in one process stand for two nodes; the transport between them is in-process
//! and can lose answers or refuse delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use aggregate_actors::Context;
use aggregate_actors::actor_runtime::{Inbound, Location, RemoteCall, Transport, TransportError};
use aggregate_actors::event_stores::testing::{Hooked, StoreHooks};
use aggregate_actors::event_stores::{
    EventMetadata, EventStore, InMemoryEventStore, InMemorySnapshotStore, ReadQuery, SnapshotStore,
    StoreResult, StreamId, StreamStart, TraceParent,
};
use aggregate_actors::{
    Aggregate, AggregateSettings, At, CommandError, CommandId, CommandOptions, Executor,
    ExecutorError, Placement, RuntimeConfig,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, RwLock};

struct Counter;

#[derive(Debug, Serialize, Deserialize)]
enum CounterCommand {
    Add(u32),
    Take(u32),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added(u32),
    Taken(u32),
}

#[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("only {have} left")]
struct NotEnough {
    have: u32,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type State = u32;
    type Error = NotEnough;

    fn decide(
        state: &u32,
        command: &CounterCommand,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<CounterEvent>, NotEnough> {
        match *command {
            CounterCommand::Add(n) => Ok(vec![CounterEvent::Added(n)]),
            CounterCommand::Take(n) if n > *state => Err(NotEnough { have: *state }),
            CounterCommand::Take(n) => Ok(vec![CounterEvent::Taken(n)]),
        }
    }

    fn apply(state: &mut u32, event: &CounterEvent) {
        match event {
            CounterEvent::Added(n) => *state += n,
            CounterEvent::Taken(n) => *state -= n,
        }
    }
}

/// Node "A" serves ids starting with "a-", node "B" the rest; `misroute` makes B route its
/// own ids to A, which does not serve them (routes that disagree during a move);
/// `handed_over` moves B's ids to A, on both nodes (a handoff).
struct Split {
    node: &'static str,
    misroute: Arc<AtomicBool>,
    handed_over: Arc<AtomicBool>,
}

impl Split {
    fn owner(&self, id: &str) -> &'static str {
        if id.starts_with("a-") || self.handed_over.load(Ordering::SeqCst) {
            "A"
        } else {
            "B"
        }
    }
}

impl Placement<String> for Split {
    fn is_local(&self, id: &String) -> bool {
        self.owner(id) == self.node && !(self.node == "B" && self.misroute.load(Ordering::SeqCst))
    }

    fn locate(&self, id: &String) -> Location {
        if self.is_local(id) {
            return Location::Local;
        }
        let owner = if self.misroute.load(Ordering::SeqCst) {
            "A"
        } else {
            self.owner(id)
        };
        if owner == self.node {
            Location::Unknown
        } else {
            Location::Remote(owner.to_owned())
        }
    }
}

/// In-process transport; can lose the next answer (after delivering the call), refuse
/// delivery altogether, keep a copy of the next answer, or answer the next call with other
/// bytes (after delivering it).
#[derive(Default)]
struct Loopback {
    nodes: RwLock<HashMap<String, Arc<dyn Inbound>>>,
    lose_next_answers: AtomicU32,
    refuse: AtomicBool,
    delivered: AtomicU32,
    keep_next_answer: AtomicBool,
    kept: std::sync::Mutex<Option<Vec<u8>>>,
    answer_next_with: std::sync::Mutex<Option<Vec<u8>>>,
}

#[async_trait::async_trait]
impl Transport for Loopback {
    async fn call(&self, node: &str, call: RemoteCall) -> Result<Vec<u8>, TransportError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(TransportError::Unreachable {
                node: node.into(),
                reason: "refused".into(),
            });
        }
        let inbound = self.nodes.read().await.get(node).cloned().unwrap();
        self.delivered.fetch_add(1, Ordering::SeqCst);
        let answer = inbound.handle(call).await;
        let lose = self
            .lose_next_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lose {
            return Err(TransportError::Lost {
                node: node.into(),
                reason: "answer lost".into(),
            });
        }
        if self.keep_next_answer.swap(false, Ordering::SeqCst) {
            *self.kept.lock().unwrap() = Some(answer.clone());
        }
        if let Some(other) = self.answer_next_with.lock().unwrap().take() {
            return Ok(other);
        }
        Ok(answer)
    }
}

/// Holds an activation's first read of one id's stream until released: a command or read waits
/// here for the activation while the test moves the id away.
#[derive(Default)]
struct ActivationGate {
    stream: std::sync::Mutex<Option<String>>,
    reached: Notify,
    release: Notify,
}

impl ActivationGate {
    /// Holds the next activation of `id`.
    fn hold(&self, id: &str) {
        *self.stream.lock().unwrap() = Some(id.to_owned());
    }
}

#[async_trait::async_trait]
impl StoreHooks for ActivationGate {
    async fn read_start(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        snapshots: &dyn SnapshotStore,
        page_size: usize,
    ) -> StoreResult<Option<StreamStart>> {
        let held = {
            let mut gated = self.stream.lock().unwrap();
            let held = gated.as_deref() == Some(stream.aggregate_id());
            if held {
                *gated = None;
            }
            held
        };
        if held {
            self.reached.notify_one();
            self.release.notified().await;
        }
        inner.read_start(stream, snapshots, page_size).await
    }
}

struct Nodes {
    a: Executor,
    b: Executor,
    events: Arc<dyn EventStore>,
    transport: Arc<Loopback>,
    misroute: Arc<AtomicBool>,
    handed_over: Arc<AtomicBool>,
    gate: Arc<Hooked<ActivationGate>>,
}

async fn nodes(remote: bool) -> Nodes {
    nodes_with_call_timeout(remote, Duration::from_secs(2)).await
}

/// [`nodes`] whose calls time out after `call_timeout` unless a call says otherwise.
async fn nodes_with_call_timeout(remote: bool, call_timeout: Duration) -> Nodes {
    let gate = Arc::new(Hooked::new(
        Arc::new(InMemoryEventStore::new()),
        ActivationGate::default(),
    ));
    let events: Arc<dyn EventStore> = gate.clone();
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(InMemorySnapshotStore::new());
    let transport = Arc::new(Loopback::default());
    let misroute = Arc::new(AtomicBool::new(false));
    let handed_over = Arc::new(AtomicBool::new(false));
    let node = |name: &'static str| {
        let misroute = Arc::clone(&misroute);
        let handed_over = Arc::clone(&handed_over);
        let settings = AggregateSettings::new().runtime(RuntimeConfig {
            call_timeout,
            ..RuntimeConfig::default()
        });
        let builder = Executor::builder(Arc::clone(&events), Arc::clone(&snapshots))
            .placement(Arc::new(move |_| {
                Arc::new(Split {
                    node: name,
                    misroute: Arc::clone(&misroute),
                    handed_over: Arc::clone(&handed_over),
                })
            }))
            .transport(transport.clone());
        if remote {
            builder.register_remote::<Counter>(settings)
        } else {
            builder.register::<Counter>(settings)
        }
        .build()
        .unwrap()
    };
    let (a, b) = (node("A"), node("B"));
    let mut map = transport.nodes.write().await;
    map.insert("A".into(), a.inbound());
    map.insert("B".into(), b.inbound());
    drop(map);
    Nodes {
        a,
        b,
        events,
        transport,
        misroute,
        handed_over,
        gate,
    }
}

async fn stored(events: &dyn EventStore, id: &str) -> usize {
    let stream = StreamId::new("counter", id).unwrap();
    events
        .read_stream(&stream, ReadQuery::all())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_command_for_an_id_served_elsewhere_runs_on_its_owner_and_the_outcome_comes_back() {
    let n = nodes(true).await;
    let done =
        n.b.execute::<Counter>("a-1", CounterCommand::Add(5))
            .await
            .unwrap();
    assert_eq!(
        (done.version, done.events, done.duplicate),
        (1, vec![CounterEvent::Added(5)], false)
    );
    assert!(n.a.is_live::<Counter>("a-1"), "the owner runs the actor");
    assert!(
        !n.b.is_live::<Counter>("a-1"),
        "the forwarding node holds none"
    );
    assert_eq!(stored(&*n.events, "a-1").await, 1);
    assert_eq!(n.transport.delivered.load(Ordering::SeqCst), 1);

    let refused = n.b.execute::<Counter>("a-1", CounterCommand::Take(9)).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(NotEnough { have: 5 }))),
        "the domain error travels back typed: {refused:?}"
    );
    let view = n.b.state::<Counter>("a-1").await.unwrap();
    assert_eq!((view.state, view.version), (5, 1));
    let missing = n.b.state::<Counter>("a-unknown").await;
    assert!(
        matches!(missing, Err(ExecutorError::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_forwarded_command_carries_its_correlation_causation_and_trace_context_to_the_owner() {
    let n = nodes(true).await;
    let metadata = EventMetadata {
        correlation_id: Some(uuid::Uuid::now_v7()),
        causation_id: Some(uuid::Uuid::now_v7()),
        trace_parent: Some(TraceParent::generate()),
    };
    n.b.execute_with::<Counter>(
        "a-traced",
        CounterCommand::Add(1),
        CommandOptions::new().metadata(metadata),
    )
    .await
    .unwrap();
    assert!(n.a.is_live::<Counter>("a-traced"), "ran on the owner");
    let stream = StreamId::new("counter", "a-traced").unwrap();
    let read = n
        .events
        .read_stream(&stream, ReadQuery::all())
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].metadata, metadata);
}

#[tokio::test]
async fn a_forwarded_command_whose_answer_is_lost_is_indeterminate_and_its_retry_applies_once() {
    let n = nodes(true).await;
    n.transport.lose_next_answers.store(1, Ordering::SeqCst);
    let id = CommandId::new();
    let lost =
        n.b.execute_with::<Counter>(
            "a-2",
            CounterCommand::Add(3),
            CommandOptions::new().command_id(id),
        )
        .await;
    match lost {
        Err(CommandError::Indeterminate(i)) => assert_eq!(i.command_id, id),
        other => panic!("expected indeterminate, got {other:?}"),
    }
    let retried =
        n.b.execute_with::<Counter>(
            "a-2",
            CounterCommand::Add(3),
            CommandOptions::new().command_id(id),
        )
        .await
        .unwrap();
    assert!(retried.duplicate, "the owner applied it the first time");
    assert_eq!(stored(&*n.events, "a-2").await, 1);
}

/// The owner answered a delivered command with something other than a command's outcome (a
/// state): what happened there is unknown, so the outcome is indeterminate, never "not
/// stored", and the retry is answered as a duplicate.
#[tokio::test]
async fn a_forwarded_command_answered_with_the_wrong_kind_of_answer_is_indeterminate() {
    let n = nodes(true).await;
    n.a.execute::<Counter>("a-3", CounterCommand::Add(1))
        .await
        .unwrap();
    n.transport.keep_next_answer.store(true, Ordering::SeqCst);
    n.b.state::<Counter>("a-3").await.unwrap();
    let state_answer = n.transport.kept.lock().unwrap().take().unwrap();
    *n.transport.answer_next_with.lock().unwrap() = Some(state_answer);
    let id = CommandId::new();
    let options = || CommandOptions::new().command_id(id);
    match n
        .b
        .execute_with::<Counter>("a-3", CounterCommand::Add(2), options())
        .await
    {
        Err(CommandError::Indeterminate(i)) => assert_eq!(i.command_id, id),
        other => panic!("expected indeterminate, got {other:?}"),
    }
    let retried =
        n.b.execute_with::<Counter>("a-3", CounterCommand::Add(2), options())
            .await
            .unwrap();
    assert!(retried.duplicate, "the owner stored it the first time");
    assert_eq!(stored(&*n.events, "a-3").await, 2);
}

#[tokio::test]
async fn an_unreachable_owner_is_retried_until_the_deadline_and_nothing_is_stored() {
    // Calls of these nodes time out after 20 s unless they say otherwise: far from the
    // command's own deadline, so that retrying until the call timeout instead would show,
    // and a bound between the two leaves seconds for a stalled test.
    let n = nodes_with_call_timeout(true, Duration::from_secs(20)).await;
    n.transport.refuse.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let refused =
        n.b.execute_with::<Counter>(
            "a-3",
            CounterCommand::Add(1),
            CommandOptions::new().timeout(Duration::from_millis(400)),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the command's deadline (400 ms) ended the retries: {:?}",
        started.elapsed()
    );
    match refused {
        Err(CommandError::NotStored(ExecutorError::Remote {
            kind, retryable, ..
        })) => {
            assert_eq!(kind, "unreachable");
            assert!(retryable);
        }
        other => panic!("expected not stored (unreachable), got {other:?}"),
    }
    assert_eq!(stored(&*n.events, "a-3").await, 0);
}

#[tokio::test]
async fn a_receiver_that_does_not_serve_the_id_sends_the_caller_back_to_its_routes() {
    let n = nodes(true).await;
    // B believes A owns "b-1", but A does not serve it: A answers "not owner", B retries.
    n.misroute.store(true, Ordering::SeqCst);
    let b = n.b.clone();
    let call =
        tokio::spawn(async move { b.execute::<Counter>("b-1", CounterCommand::Add(2)).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while n.transport.delivered.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "retried while routes disagree"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !n.a.is_live::<Counter>("b-1"),
        "A never ran what it does not serve"
    );
    n.misroute.store(false, Ordering::SeqCst);
    let done = call.await.unwrap().unwrap();
    assert_eq!(done.version, 1);
    assert!(n.b.is_live::<Counter>("b-1"));
    assert_eq!(stored(&*n.events, "b-1").await, 1);
}

#[tokio::test]
async fn a_command_waiting_here_for_an_activation_while_its_id_is_handed_over_is_applied_once_by_the_new_owner()
 {
    let n = nodes(true).await;
    n.gate.hold("b-1");
    let b = n.b.clone();
    let call =
        tokio::spawn(async move { b.execute::<Counter>("b-1", CounterCommand::Add(2)).await });
    // B serves "b-1": the command waits in B's directory for the activation's first read.
    tokio::time::timeout(Duration::from_secs(5), n.gate.reached.notified())
        .await
        .expect("B started activating b-1");
    n.handed_over.store(true, Ordering::SeqCst);
    n.gate.release.notify_one();
    let done = call.await.unwrap().expect("sent on to the new owner");
    assert_eq!(done.version, 1);
    assert_eq!(
        n.transport.delivered.load(Ordering::SeqCst),
        1,
        "forwarded to A once"
    );
    assert!(n.a.is_live::<Counter>("b-1"), "A, the new owner, ran it");
    assert_eq!(stored(&*n.events, "b-1").await, 1, "stored once");
}

#[tokio::test]
async fn a_state_read_waiting_here_for_an_activation_while_its_id_is_handed_over_is_answered_by_the_new_owner()
 {
    let n = nodes(true).await;
    n.b.execute::<Counter>("b-2", CounterCommand::Add(5))
        .await
        .unwrap();
    n.b.passivate::<Counter>("b-2").await.unwrap();
    n.gate.hold("b-2");
    let b = n.b.clone();
    let read = tokio::spawn(async move { b.state::<Counter>("b-2").await });
    tokio::time::timeout(Duration::from_secs(5), n.gate.reached.notified())
        .await
        .expect("B started activating b-2");
    n.handed_over.store(true, Ordering::SeqCst);
    n.gate.release.notify_one();
    let view = read.await.unwrap().expect("read on the new owner");
    assert_eq!((view.state, view.version), (5, 1));
    assert_eq!(n.transport.delivered.load(Ordering::SeqCst), 1);
    assert!(n.a.is_live::<Counter>("b-2"), "A, the new owner, answered");
}

#[tokio::test]
async fn a_type_not_registered_for_forwarding_is_refused_as_not_local() {
    let n = nodes(false).await;
    let refused = n.b.execute::<Counter>("a-4", CounterCommand::Add(1)).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::NotStored(ExecutorError::NotLocal { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(n.transport.delivered.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_snapshot_asked_of_a_non_owner_is_taken_by_the_owners_actor_and_reconstruction_answers_anywhere()
 {
    let n = nodes(true).await;
    for amount in [5, 7, 11] {
        n.b.execute::<Counter>("a-2", CounterCommand::Add(amount))
            .await
            .unwrap();
    }
    let delivered = n.transport.delivered.load(Ordering::SeqCst);
    let version = n.b.snapshot_now::<Counter>("a-2").await.unwrap();
    assert_eq!(version, 3);
    assert_eq!(
        n.transport.delivered.load(Ordering::SeqCst),
        delivered + 1,
        "the snapshot request travelled to the owner"
    );
    assert!(
        !n.b.is_live::<Counter>("a-2"),
        "the asking node activated nothing"
    );
    let stored =
        n.a.snapshot_store()
            .load_latest(&StreamId::new("counter", "a-2").unwrap())
            .await
            .unwrap()
            .expect("a snapshot was written");
    assert_eq!(stored.version, 3);
    let missing = n.b.snapshot_now::<Counter>("a-none").await;
    assert!(
        matches!(missing, Err(ExecutorError::NotFound { .. })),
        "{missing:?}"
    );

    // Reconstruction reads the shared stores: the same answer on both nodes, no hop.
    let delivered = n.transport.delivered.load(Ordering::SeqCst);
    let here =
        n.a.reconstruct::<Counter>("a-2", At::Version(2))
            .await
            .unwrap();
    let there =
        n.b.reconstruct::<Counter>("a-2", At::Version(2))
            .await
            .unwrap();
    assert_eq!((here.state, here.version), (12, 2));
    assert_eq!((there.state, there.version), (12, 2));
    assert_eq!(n.transport.delivered.load(Ordering::SeqCst), delivered);
}
