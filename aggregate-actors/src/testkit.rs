//! A test kit for aggregates: given events, when a command, then events or an error.
//!
//! ```
//! # use aggregate_actors::{Aggregate, Context, testkit::TestKit};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! # enum Event { Added(u32) }
//! # #[derive(Debug, thiserror::Error, PartialEq)]
//! # #[error("too big")] struct TooBig;
//! # struct Counter;
//! # impl Aggregate for Counter {
//! #     const TYPE: &'static str = "counter";
//! #     type Command = u32; type Event = Event; type State = u32; type Error = TooBig;
//! #     fn decide(total: &u32, n: &u32, _ctx: &mut Context<'_, Self>) -> Result<Vec<Event>, TooBig> {
//! #         if total + n > 10 { Err(TooBig) } else { Ok(vec![Event::Added(*n)]) }
//! #     }
//! #     fn apply(total: &mut u32, Event::Added(n): &Event) { *total += n; }
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut kit = TestKit::<Counter>::new();
//! kit.given(vec![Event::Added(4)]).await;
//! kit.when(5).await.then_events(&[Event::Added(5)]);
//! kit.when(2).await.then_rejected(|e| *e == TooBig);
//! assert_eq!(kit.restart().await, 9);
//! # });
//! ```
//!
//! Snapshots: [`reactivate`](TestKit::reactivate) passivates the aggregate (its snapshot
//! written) and activates it again; then [`then_activated_from`](TestKit::then_activated_from)
//! and [`then_replayed`](TestKit::then_replayed) assert which snapshot the activation used and
//! how many events it replayed, and [`reconstruct`](TestKit::reconstruct) reads the aggregate
//! at an earlier point. A strategy of your own is tested on its own with
//! [`SnapshotContext::new`](crate::strategy::SnapshotContext::new), and in place with
//! [`TestKit::with_settings`].

use std::fmt::Debug;
use std::sync::Arc;

use event_stores::{
    EventMetadata, EventStore, InMemoryEventStore, InMemorySnapshotStore, SnapshotStore, StreamId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::Aggregate;
use crate::codec;
use crate::codec::encode_events;
use crate::context::ManualClock;
use crate::error::CommandError;
use crate::executor::Executor;
use crate::metrics::ActivationReport;
use crate::outcome::{At, Committed, Reconstruction};
use crate::settings::AggregateSettings;

/// Drives one aggregate instance through an executor on real stores (in-memory by default).
pub struct TestKit<A: Aggregate> {
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    settings: AggregateSettings<A>,
    executor: Executor,
    id: String,
    clock: ManualClock,
    last: Option<Result<Committed<A>, CommandError<A::Error>>>,
    activation: Option<ActivationReport>,
}

impl<A: Aggregate> TestKit<A> {
    /// A kit on fresh in-memory stores with default settings. Needs a Tokio runtime.
    pub fn new() -> Self {
        Self::with_stores(
            Arc::new(InMemoryEventStore::new()),
            Arc::new(InMemorySnapshotStore::new()),
            AggregateSettings::default(),
        )
    }

    /// A kit on the given stores and settings. Needs a Tokio runtime.
    ///
    /// The kit's [`clock`](Self::clock) replaces the settings' clock: it stands at the time
    /// the kit was made until the test moves it, so `decide`'s
    /// [`Context::now`](crate::Context::now) is reproducible.
    pub fn with_stores(
        events: Arc<dyn EventStore>,
        snapshots: Arc<dyn SnapshotStore>,
        settings: AggregateSettings<A>,
    ) -> Self {
        let clock = ManualClock::new(chrono::Utc::now());
        let settings = settings.clock(clock.clone());
        let executor = build(&events, &snapshots, &settings);
        Self {
            events,
            snapshots,
            settings,
            executor,
            id: uuid::Uuid::now_v7().to_string(),
            clock,
            last: None,
            activation: None,
        }
    }

    /// A kit on fresh in-memory stores with `settings` (a snapshot strategy under test, say).
    pub fn with_settings(settings: AggregateSettings<A>) -> Self {
        Self::with_stores(
            Arc::new(InMemoryEventStore::new()),
            Arc::new(InMemorySnapshotStore::new()),
            settings,
        )
    }

    /// The clock `decide` reads: set it or advance it between commands.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The aggregate id under test.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The executor the kit drives.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Stores `events` as the aggregate's history (appended after whatever is there).
    pub async fn given(&mut self, events: Vec<A::Event>) -> &mut Self {
        let stream = self.stream();
        let result = async {
            let batch = encode_events::<A>(
                &stream,
                uuid::Uuid::now_v7(),
                &events,
                EventMetadata::default(),
            )?;
            let current = self.events.stream_version(&stream).await?;
            self.events.append(&stream, current, batch).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        }
        .await;
        if let Err(error) = result {
            panic!("given: could not store the history of {stream}: {error}");
        }
        self
    }

    /// Runs `command`; check the outcome with one of the `then_*` methods.
    pub async fn when(&mut self, command: A::Command) -> &mut Self {
        self.last = Some(self.executor.execute::<A>(&self.id, command).await);
        self
    }

    /// Asserts the last command succeeded with exactly `expected` events.
    pub fn then_events(&mut self, expected: &[A::Event]) -> &mut Self
    where
        A::Event: PartialEq,
    {
        match &self.last {
            Some(Ok(committed)) => assert_eq!(
                committed.events, expected,
                "then_events: other events than expected"
            ),
            Some(Err(error)) => panic!("then_events: the command failed: {error}"),
            None => panic!("then_events: no command was run (call when first)"),
        }
        self
    }

    /// Asserts the last command was rejected with an error that `matches` accepts.
    pub fn then_rejected(&mut self, matches: impl FnOnce(&A::Error) -> bool) -> &mut Self {
        match &self.last {
            Some(Err(CommandError::Rejected(error))) => {
                assert!(
                    matches(error),
                    "then_rejected: rejected with an unexpected error: {error}"
                )
            }
            Some(Err(error)) => panic!("then_rejected: failed, but not by the aggregate: {error}"),
            Some(Ok(committed)) => panic!(
                "then_rejected: the command succeeded with {:?}",
                committed.events
            ),
            None => panic!("then_rejected: no command was run (call when first)"),
        }
        self
    }

    /// The outcome of the last command.
    pub fn outcome(&self) -> Option<&Result<Committed<A>, CommandError<A::Error>>> {
        self.last.as_ref()
    }

    /// The aggregate's current state (default if it has no events).
    pub async fn state(&self) -> A::State {
        match self.executor.state::<A>(&self.id).await {
            Ok(view) => view.state,
            Err(crate::ExecutorError::NotFound { .. }) => A::State::default(),
            Err(error) => panic!("state: {error}"),
        }
    }

    /// Shuts the executor down (the actor may leave a snapshot), starts a new one on the same
    /// stores, re-activates the aggregate and asserts its state equals the state before.
    /// Returns that state.
    pub async fn restart(&mut self) -> A::State
    where
        A::State: PartialEq,
    {
        let before = self.state().await;
        self.executor.shutdown().await;
        self.executor = build(&self.events, &self.snapshots, &self.settings);
        let after = self.state().await;
        assert_eq!(before, after, "restart: state after re-activation differs");
        after
    }

    /// Passivates the aggregate (leaving the snapshot its settings ask for on passivation),
    /// waits for every snapshot write, activates it again and returns what that activation
    /// did; the `then_activated_from` / `then_replayed` assertions check it.
    pub async fn reactivate(&mut self) -> ActivationReport {
        if let Err(error) = self.executor.passivate::<A>(&self.id).await {
            panic!("reactivate: could not passivate: {error}");
        }
        self.executor.flush_snapshots().await;
        let report = match self.executor.state::<A>(&self.id).await {
            Ok(view) => view.activation,
            Err(error) => panic!("reactivate: could not activate: {error}"),
        };
        self.activation = Some(report.clone());
        report
    }

    /// Asserts that the last [`reactivate`](Self::reactivate) started from the snapshot at
    /// `version` (`None`: from no snapshot, a full replay).
    pub fn then_activated_from(&mut self, version: Option<u64>) -> &mut Self {
        let report = self.last_activation("then_activated_from");
        assert_eq!(
            report.snapshot_version(),
            version,
            "then_activated_from: the activation started from another snapshot ({report:?})"
        );
        self
    }

    /// Asserts that the last [`reactivate`](Self::reactivate) replayed exactly `events`.
    pub fn then_replayed(&mut self, events: u64) -> &mut Self {
        let report = self.last_activation("then_replayed");
        assert_eq!(
            report.events_replayed, events,
            "then_replayed: the activation replayed another number of events ({report:?})"
        );
        self
    }

    /// The aggregate as it was at `at`, rebuilt from the newest snapshot at or before it.
    pub async fn reconstruct(&self, at: At) -> Reconstruction<A> {
        match self.executor.reconstruct::<A>(&self.id, at).await {
            Ok(reconstruction) => reconstruction,
            Err(error) => panic!("reconstruct: {error}"),
        }
    }

    fn last_activation(&self, assertion: &str) -> &ActivationReport {
        match &self.activation {
            Some(report) => report,
            None => panic!("{assertion}: no reactivation yet (call reactivate first)"),
        }
    }

    fn stream(&self) -> StreamId {
        match StreamId::new(A::TYPE, &self.id) {
            Ok(stream) => stream,
            Err(error) => panic!("invalid aggregate type name {:?}: {error}", A::TYPE),
        }
    }
}

impl<A: Aggregate> Default for TestKit<A> {
    fn default() -> Self {
        Self::new()
    }
}

fn build<A: Aggregate>(
    events: &Arc<dyn EventStore>,
    snapshots: &Arc<dyn SnapshotStore>,
    settings: &AggregateSettings<A>,
) -> Executor {
    match Executor::builder(Arc::clone(events), Arc::clone(snapshots))
        .register::<A>(settings.clone())
        .build()
    {
        Ok(executor) => executor,
        Err(error) => panic!("test kit executor: {error}"),
    }
}

/// Asserts that `value` survives the storage encoding (MessagePack, named fields) unchanged.
/// Use it on every event variant and on a well-filled state.
pub fn assert_round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = match codec::encode(value) {
        Ok(bytes) => bytes,
        Err(error) => panic!("round trip: {value:?} cannot be encoded: {error}"),
    };
    match codec::decode::<T>(&bytes) {
        Ok(back) => assert_eq!(&back, value, "round trip changed the value"),
        Err(error) => panic!("round trip: {value:?} cannot be decoded: {error}"),
    }
}
