//! [`ExecutorBuilder`]: stores, aggregate types with their settings, placement and transport,
//! then [`build`](ExecutorBuilder::build).

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actor_runtime::{Directory, LocalPlacement, Transport};
use event_stores::{EventStore, InMemoryEventStore, InMemorySnapshotStore, SnapshotStore};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::actor::AggregateContext;
use crate::aggregate::Aggregate;
use crate::executor::{Executor, Inner, Registered, Registration};
use crate::inbound::RemoteType;
use crate::metrics::AggregateMetrics;
use crate::remote::{RemoteCodec, RemoteHandler};
use crate::resident::ResidentSet;
use crate::settings::AggregateSettings;
use crate::shared::{PlacementFactory, Shared};
use crate::snapshot_writer::SnapshotWriter;

/// Snapshot writes in flight at once, over all aggregates of an executor, by default.
const MAX_CONCURRENT_SNAPSHOT_WRITES: usize = 8;

/// Why an executor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two registered types share one `Aggregate::TYPE` name (they would share streams).
    #[error("aggregate type name {0:?} is registered twice")]
    DuplicateType(&'static str),
    /// A type's snapshot compression setting cannot be used (e.g. a zstd level out of range).
    #[error("snapshot compression of aggregate type {aggregate_type:?}: {source}")]
    InvalidCompression {
        /// The aggregate type.
        aggregate_type: &'static str,
        /// What is wrong with the setting.
        #[source]
        source: crate::codec::InvalidCompression,
    },
}

/// Builds an [`Executor`]: stores, then one `register` per aggregate type.
pub struct ExecutorBuilder {
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    registrations: Vec<Registrar>,
    names: Vec<&'static str>,
    /// Settings found unusable at registration, reported by `build`.
    invalid: Vec<BuildError>,
    shutdown_timeout: Duration,
    placement: PlacementFactory,
    transport: Option<Arc<dyn Transport>>,
    snapshot_writers: usize,
}

/// Creates one type's registration once the shared parts (stores, writer) exist, with its
/// handler of forwarded calls if it is served to other nodes.
type Registrar = Box<
    dyn FnOnce(
        &Shared,
    ) -> (
        TypeId,
        Box<dyn Registered>,
        Option<Arc<dyn RemoteHandler<Executor>>>,
    ),
>;

impl Executor {
    /// Starts building an executor on the given stores.
    pub fn builder(
        events: Arc<dyn EventStore>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> ExecutorBuilder {
        ExecutorBuilder::new(events, snapshots)
    }

    /// Starts building an executor on fresh in-memory stores (the embedded default).
    pub fn in_memory() -> ExecutorBuilder {
        Self::builder(
            Arc::new(InMemoryEventStore::new()),
            Arc::new(InMemorySnapshotStore::new()),
        )
    }
}

impl ExecutorBuilder {
    /// A builder on the given stores, with no types registered, every id local, no transport.
    pub(crate) fn new(events: Arc<dyn EventStore>, snapshots: Arc<dyn SnapshotStore>) -> Self {
        Self {
            events,
            snapshots,
            registrations: Vec::new(),
            names: Vec::new(),
            invalid: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            placement: Arc::new(|_| Arc::new(LocalPlacement)),
            transport: None,
            snapshot_writers: MAX_CONCURRENT_SNAPSHOT_WRITES,
        }
    }

    /// Registers aggregate type `A` with its settings.
    ///
    /// The type's `metrics` handles are resolved here, so install a global `metrics` recorder
    /// (e.g. a Prometheus exporter) before building the executor.
    pub fn register<A: Aggregate>(self, settings: AggregateSettings<A>) -> Self {
        self.add::<A>(settings, None)
    }

    /// Registers aggregate type `A` so that commands and state reads for its ids that another
    /// node serves are forwarded there (through the [`transport`](Self::transport)), and calls
    /// forwarded here are answered. Its commands and domain errors travel as MessagePack, so
    /// they must be `Serialize + DeserializeOwned` (derive both, like the events).
    pub fn register_remote<A: Aggregate>(self, settings: AggregateSettings<A>) -> Self
    where
        A::Command: Serialize + DeserializeOwned,
        A::Error: Serialize + DeserializeOwned,
    {
        self.add::<A>(settings, Some(RemoteCodec::<A>::serde()))
    }

    fn add<A: Aggregate>(
        mut self,
        settings: AggregateSettings<A>,
        codec: Option<RemoteCodec<A>>,
    ) -> Self {
        self.names.push(A::TYPE);
        if let Err(source) = settings.compression.validate() {
            self.invalid.push(BuildError::InvalidCompression {
                aggregate_type: A::TYPE,
                source,
            });
        }
        self.registrations.push(Box::new(move |shared: &Shared| {
            let context = Arc::new(AggregateContext {
                events: Arc::clone(&shared.events),
                snapshots: Arc::clone(&shared.snapshots),
                writer: shared.writer.clone(),
                metrics: Arc::new(AggregateMetrics::new(A::TYPE)),
                resident: ResidentSet::new(settings.resident),
                settings,
            });
            let runtime = context.settings.runtime.clone();
            let placement = (shared.placement)(A::TYPE);
            let handler: Option<Arc<dyn RemoteHandler<Executor>>> = codec
                .is_some()
                .then(|| Arc::new(RemoteType::<A>::new()) as Arc<dyn RemoteHandler<Executor>>);
            let registration: Box<dyn Registered> = Box::new(Registration::<A> {
                directory: Directory::with_placement(Arc::clone(&context), runtime, placement),
                context,
                codec,
            });
            (TypeId::of::<A>(), registration, handler)
        }));
        self
    }

    /// Carries calls for ids served by other nodes (see
    /// [`register_remote`](Self::register_remote)). Without one, such calls fail with
    /// [`ExecutorError::NotLocal`](crate::ExecutorError::NotLocal).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Serves only the ids `placement` gives each aggregate type (a cluster's shards owned by
    /// this node); calls for other ids fail with [`ExecutorError::NotLocal`](crate::ExecutorError::NotLocal) and activate
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

    /// How many snapshot writes may be in flight at once, over all aggregate types (default
    /// 8; 0 counts as 1). More helps a bulk rebuild ([`crate::batch`]) against a store that
    /// writes in parallel; each write holds a store connection meanwhile.
    pub fn snapshot_writers(mut self, writes: usize) -> Self {
        self.snapshot_writers = writes.max(1);
        self
    }

    /// Builds the executor. Must run inside a Tokio runtime (it starts background tasks).
    pub fn build(mut self) -> Result<Executor, BuildError> {
        if let Some(invalid) = self.invalid.drain(..).next() {
            return Err(invalid);
        }
        let mut seen = std::collections::HashSet::new();
        for name in &self.names {
            if !seen.insert(*name) {
                return Err(BuildError::DuplicateType(name));
            }
        }
        let shared = Shared {
            writer: SnapshotWriter::start(Arc::clone(&self.snapshots), self.snapshot_writers),
            events: self.events,
            snapshots: self.snapshots,
            placement: self.placement,
            transport: self.transport,
        };
        let mut types = HashMap::default();
        let mut order = Vec::new();
        let mut remote = HashMap::new();
        for (register, name) in self.registrations.into_iter().zip(&self.names) {
            let (type_id, registration, handler) = register(&shared);
            order.push(type_id);
            types.insert(type_id, registration);
            if let Some(handler) = handler {
                remote.insert(*name, handler);
            }
        }
        Ok(Executor {
            inner: Arc::new(Inner {
                shared,
                types,
                order,
                remote,
                shut_down: AtomicBool::new(false),
                shutdown_timeout: self.shutdown_timeout,
            }),
        })
    }
}
