//! The executor: the one entry point callers use. It routes each command to the live actor of
//! its aggregate (activating it on demand) and offers state reads, snapshots on demand,
//! reconstruction and statistics.
//!
//! Routing is a `TypeId` lookup in an immutable map plus the runtime's concurrent map lookup
//! of the id: no central actor sits on the command path.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actor_runtime::{Directory, LocalPlacement, Placement, RuntimeError};
use event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, SnapshotStore, StreamId,
};

use crate::actor::{AggregateActor, AggregateContext, AggregateMessage, CommandCall};
use crate::aggregate::Aggregate;
use crate::command::CommandOptions;
use crate::error::{CommandError, ExecutorError, Indeterminate};
use crate::hydrate::{Target, hydrate};
use crate::metrics::AggregateMetrics;
use crate::outcome::{At, Committed, ExecutorStats, Reconstruction, StateView, TypeStats};
use crate::settings::AggregateSettings;
use crate::snapshot_writer::SnapshotWriter;

/// Snapshot writes in flight at once, over all aggregates of an executor.
const MAX_CONCURRENT_SNAPSHOT_WRITES: usize = 8;

/// Why an executor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Two registered types share one `Aggregate::TYPE` name (they would share streams).
    #[error("aggregate type name {0:?} is registered twice")]
    DuplicateType(&'static str),
}

/// Builds an [`Executor`]: stores, then one `register` per aggregate type.
pub struct ExecutorBuilder {
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    registrations: Vec<Registrar>,
    names: Vec<&'static str>,
    shutdown_timeout: Duration,
    placement: PlacementFactory,
}

/// Gives the placement of each aggregate type (which ids this node serves).
pub type PlacementFactory = Arc<dyn Fn(&'static str) -> Arc<dyn Placement<String>> + Send + Sync>;

/// Creates one type's registration once the shared parts (stores, writer) exist.
type Registrar = Box<dyn FnOnce(&Shared) -> (TypeId, Box<dyn Registered>)>;

struct Shared {
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    writer: SnapshotWriter,
    placement: PlacementFactory,
}

impl ExecutorBuilder {
    /// Registers aggregate type `A` with its settings.
    ///
    /// The type's `metrics` handles are resolved here, so install a global `metrics` recorder
    /// (e.g. a Prometheus exporter) before building the executor.
    pub fn register<A: Aggregate>(mut self, settings: AggregateSettings<A>) -> Self {
        self.names.push(A::TYPE);
        self.registrations.push(Box::new(move |shared: &Shared| {
            let context = Arc::new(AggregateContext {
                events: Arc::clone(&shared.events),
                snapshots: Arc::clone(&shared.snapshots),
                writer: shared.writer.clone(),
                metrics: Arc::new(AggregateMetrics::new(A::TYPE)),
                settings,
            });
            let runtime = context.settings.runtime.clone();
            let placement = (shared.placement)(A::TYPE);
            let registration: Box<dyn Registered> = Box::new(Registration::<A> {
                directory: Directory::with_placement(Arc::clone(&context), runtime, placement),
                context,
            });
            (TypeId::of::<A>(), registration)
        }));
        self
    }

    /// Serves only the ids `placement` gives each aggregate type (a cluster's shards owned by
    /// this node); calls for other ids fail with [`ExecutorError::NotLocal`] and activate
    /// nothing. Default: every id is local.
    pub fn placement(mut self, placement: PlacementFactory) -> Self {
        self.placement = placement;
        self
    }

    /// How long [`Executor::shutdown`] waits for pending snapshot writes.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Builds the executor. Must run inside a Tokio runtime (it starts background tasks).
    pub fn build(self) -> Result<Executor, BuildError> {
        let mut seen = std::collections::HashSet::new();
        for name in &self.names {
            if !seen.insert(*name) {
                return Err(BuildError::DuplicateType(name));
            }
        }
        let shared = Shared {
            writer: SnapshotWriter::start(
                Arc::clone(&self.snapshots),
                MAX_CONCURRENT_SNAPSHOT_WRITES,
            ),
            events: self.events,
            snapshots: self.snapshots,
            placement: self.placement,
        };
        let mut types = HashMap::new();
        let mut order = Vec::new();
        for register in self.registrations {
            let (type_id, registration) = register(&shared);
            order.push(type_id);
            types.insert(type_id, registration);
        }
        Ok(Executor {
            inner: Arc::new(Inner {
                shared,
                types,
                order,
                shut_down: AtomicBool::new(false),
                shutdown_timeout: self.shutdown_timeout,
            }),
        })
    }
}

/// Runs commands against event-sourced aggregates held by virtual actors. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Shared,
    types: HashMap<TypeId, Box<dyn Registered>>,
    order: Vec<TypeId>,
    shut_down: AtomicBool,
    shutdown_timeout: Duration,
}

/// One registered aggregate type, type-erased so the executor can hold many.
#[async_trait::async_trait]
trait Registered: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn stats(&self) -> TypeStats;
    async fn passivate_all(&self);
    async fn passivate_matching(
        &self,
        matches: &(dyn for<'k> Fn(&'static str, &'k str) -> bool + Sync),
    );
    async fn shutdown(&self);
}

struct Registration<A: Aggregate> {
    directory: Directory<AggregateActor<A>>,
    context: Arc<AggregateContext<A>>,
}

#[async_trait::async_trait]
impl<A: Aggregate> Registered for Registration<A> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn stats(&self) -> TypeStats {
        TypeStats {
            aggregate: self.context.metrics.stats(),
            runtime: self.directory.stats(),
        }
    }

    async fn passivate_all(&self) {
        self.directory.passivate_all().await;
    }

    async fn passivate_matching(
        &self,
        matches: &(dyn for<'k> Fn(&'static str, &'k str) -> bool + Sync),
    ) {
        self.directory
            .passivate_matching(|id: &String| matches(A::TYPE, id.as_str()))
            .await;
    }

    async fn shutdown(&self) {
        self.directory.shutdown().await;
    }
}

impl Executor {
    /// Starts building an executor on the given stores.
    pub fn builder(
        events: Arc<dyn EventStore>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> ExecutorBuilder {
        ExecutorBuilder {
            events,
            snapshots,
            registrations: Vec::new(),
            names: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            placement: Arc::new(|_| Arc::new(LocalPlacement)),
        }
    }

    /// Starts building an executor on fresh in-memory stores (the embedded default).
    pub fn in_memory() -> ExecutorBuilder {
        Self::builder(
            Arc::new(InMemoryEventStore::new()),
            Arc::new(InMemorySnapshotStore::new()),
        )
    }

    /// Runs `command` on aggregate `id` of type `A` with a fresh command id and the type's call
    /// timeout. On success the events are durable in the event store. On error, see
    /// [`CommandError`]: [`Rejected`](CommandError::Rejected) and
    /// [`NotStored`](CommandError::NotStored) stored nothing;
    /// [`Indeterminate`](CommandError::Indeterminate) may have, and is retried safely with
    /// `execute_with` and its command id.
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_with::<A>(id, command, CommandOptions::new())
            .await
    }

    /// [`execute`](Self::execute) with options: your own [`CommandId`](crate::CommandId) (send
    /// it again and the command is applied at most once: a repeat returns the original outcome
    /// with [`Committed::duplicate`] set), a timeout or deadline, and the correlation and
    /// causation ids stored on every event (an [`EventMetadata`] converts into options).
    pub async fn execute_with<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
        options: impl Into<CommandOptions>,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let options = options.into();
        let command_id = options.command_id.unwrap_or_default();
        let registration = self.registration::<A>(id)?;
        let budget = options.budget(registration.context.settings.runtime.call_timeout);
        let call = CommandCall {
            command_id,
            metadata: options.metadata,
            deadline: tokio::time::Instant::now() + budget,
        };
        let answer = registration
            .directory
            .call_timeout(&id.to_owned(), budget, |reply| AggregateMessage::Execute {
                command,
                call,
                reply,
            })
            .await;
        match answer {
            Ok(outcome) => outcome,
            // The command may be queued or running: its outcome is unknown.
            Err(error @ (RuntimeError::Timeout { .. } | RuntimeError::Abandoned { .. })) => {
                Err(CommandError::Indeterminate(Indeterminate {
                    id: id.to_owned(),
                    command_id,
                    cause: error.into(),
                }))
            }
            Err(error) => Err(CommandError::NotStored(error.into())),
        }
    }

    /// The current state and version of aggregate `id`. An id with no events is
    /// [`ExecutorError::NotFound`] and activates nothing.
    pub async fn state<A: Aggregate>(&self, id: &str) -> Result<StateView<A>, ExecutorError> {
        let registration = self.registration::<A>(id)?;
        let key = id.to_owned();
        if !registration.directory.is_live(&key) {
            self.require_exists::<A>(id).await?;
        }
        registration
            .directory
            .call(&key, |reply| AggregateMessage::State { reply })
            .await?
    }

    /// Takes a snapshot of aggregate `id` now and waits until it is written. Returns the
    /// version snapshotted.
    pub async fn snapshot_now<A: Aggregate>(&self, id: &str) -> Result<u64, ExecutorError> {
        let registration = self.registration::<A>(id)?;
        let key = id.to_owned();
        if !registration.directory.is_live(&key) {
            self.require_exists::<A>(id).await?;
        }
        let written = registration
            .directory
            .call(&key, |reply| AggregateMessage::SnapshotNow { reply })
            .await??;
        let Some(written) = written else {
            return Err(self.not_found::<A>(id));
        };
        match written.await {
            Ok(Ok(version)) => Ok(version),
            Ok(Err(message)) => Err(ExecutorError::Store(event_stores::StoreError::Backend {
                message,
                source: None,
            })),
            Err(_) => Err(ExecutorError::ShuttingDown),
        }
    }

    /// Rebuilds the state of aggregate `id` at a past version or time from the stores, using
    /// the newest valid snapshot at or before the target. The live actor is not touched.
    ///
    /// An aggregate with no events is [`ExecutorError::NotFound`]; a version past the stream's
    /// end is [`ExecutorError::VersionNotReached`]; a time before the first event gives the
    /// default state at version 0.
    pub async fn reconstruct<A: Aggregate>(
        &self,
        id: &str,
        at: At,
    ) -> Result<Reconstruction<A>, ExecutorError> {
        let registration = self.registration::<A>(id)?;
        let stream = StreamId::new(A::TYPE, id)?;
        let current = self.inner.shared.events.stream_version(&stream).await?;
        if current == 0 {
            return Err(self.not_found::<A>(id));
        }
        let target = match at {
            At::Version(requested) if requested > current => {
                return Err(ExecutorError::VersionNotReached { requested, current });
            }
            At::Version(v) => Target::Version(v),
            At::Time(t) => Target::Time(t),
        };
        let started = Instant::now();
        let context = &registration.context;
        let hydrated = hydrate::<A>(
            &*context.events,
            &*context.snapshots,
            &stream,
            target,
            context.settings.replay_page_size,
            context.settings.dedup,
            &context.metrics,
        )
        .await
        .map_err(|e| ExecutorError::Activation(Arc::new(e)))?;
        Ok(Reconstruction {
            state: hydrated.state,
            version: hydrated.version,
            reached_at: hydrated.last_recorded_at,
            from_snapshot: hydrated.snapshot,
            snapshots_skipped: hydrated.snapshots_skipped,
            events_replayed: hydrated.events_replayed,
            elapsed: started.elapsed(),
        })
    }

    /// Passivates the actor of aggregate `id` (it may snapshot on the way out); true if it was live.
    pub async fn passivate<A: Aggregate>(&self, id: &str) -> Result<bool, ExecutorError> {
        let registration = self.registration::<A>(id)?;
        Ok(registration.directory.passivate(&id.to_owned()).await)
    }

    /// Passivates every live actor of every type and waits until the snapshots they took on
    /// the way out are written.
    pub async fn passivate_all(&self) {
        for type_id in &self.inner.order {
            if let Some(registration) = self.inner.types.get(type_id) {
                registration.passivate_all().await;
            }
        }
        self.flush_snapshots().await;
    }

    /// Passivates every live actor whose (aggregate type, id) `matches` (e.g. those of a shard
    /// leaving this node) and waits until the snapshots they took on the way out are written.
    pub async fn passivate_matching(&self, matches: impl Fn(&'static str, &str) -> bool + Sync) {
        for type_id in &self.inner.order {
            if let Some(registration) = self.inner.types.get(type_id) {
                registration.passivate_matching(&matches).await;
            }
        }
        self.flush_snapshots().await;
    }

    /// True when aggregate `id` of type `A` has a live actor.
    pub fn is_live<A: Aggregate>(&self, id: &str) -> bool {
        self.typed::<A>()
            .is_some_and(|registration| registration.directory.is_live(&id.to_owned()))
    }

    /// Statistics of every registered type.
    pub fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            event_store: self.inner.shared.events.crash_safety(),
            types: self
                .inner
                .order
                .iter()
                .filter_map(|type_id| self.inner.types.get(type_id))
                .map(|registration| registration.stats())
                .collect(),
        }
    }

    /// Statistics of type `A`, if registered.
    pub fn stats_of<A: Aggregate>(&self) -> Option<TypeStats> {
        self.typed::<A>().map(Registered::stats)
    }

    /// Stops accepting calls (later ones fail with [`ExecutorError::ShuttingDown`]), lets
    /// every actor finish the commands already queued, takes passivation snapshots, and waits
    /// for pending snapshot writes.
    pub async fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        for type_id in &self.inner.order {
            if let Some(registration) = self.inner.types.get(type_id) {
                registration.shutdown().await;
            }
        }
        self.inner
            .shared
            .writer
            .flush(self.inner.shutdown_timeout)
            .await;
    }

    /// Waits until every snapshot queued so far is written (or failed).
    pub async fn flush_snapshots(&self) {
        self.inner
            .shared
            .writer
            .flush(self.inner.shutdown_timeout)
            .await;
    }

    /// The event store.
    pub fn event_store(&self) -> &Arc<dyn EventStore> {
        &self.inner.shared.events
    }

    /// The snapshot store.
    pub fn snapshot_store(&self) -> &Arc<dyn SnapshotStore> {
        &self.inner.shared.snapshots
    }

    fn typed<A: Aggregate>(&self) -> Option<&Registration<A>> {
        self.inner
            .types
            .get(&TypeId::of::<A>())
            .and_then(|registration| registration.as_any().downcast_ref::<Registration<A>>())
    }

    fn registration<A: Aggregate>(&self, id: &str) -> Result<&Registration<A>, ExecutorError> {
        if self.inner.shut_down.load(Ordering::Relaxed) {
            return Err(ExecutorError::ShuttingDown);
        }
        let registration = self
            .typed::<A>()
            .ok_or(ExecutorError::UnknownAggregateType(A::TYPE))?;
        StreamId::check(A::TYPE, id)?;
        Ok(registration)
    }

    async fn require_exists<A: Aggregate>(&self, id: &str) -> Result<(), ExecutorError> {
        let stream = StreamId::new(A::TYPE, id)?;
        if self.inner.shared.events.stream_version(&stream).await? == 0 {
            return Err(self.not_found::<A>(id));
        }
        Ok(())
    }

    fn not_found<A: Aggregate>(&self, id: &str) -> ExecutorError {
        ExecutorError::NotFound {
            aggregate_type: A::TYPE,
            id: id.to_owned(),
        }
    }
}
