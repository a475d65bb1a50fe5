//! The state a directory shares with the parts that run its actors: the slots by key, the
//! limits and their permits, counters and the shutdown flag. It sits below the directory,
//! activation, eviction and the sweeper, which all hold it; it depends on none of them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence},
    },
    time::Instant,
};

use dashmap::DashMap;
use tokio::sync::Semaphore;

use crate::{
    PassivationReason, Placement, RuntimeConfig, VirtualActor, deadlines::Deadlines,
    recency::Recency, slot::Slot, stats::Counters,
};

/// The directory's shared state, also held by activation tasks (strongly) and the sweeper
/// (weakly).
pub(crate) struct Core<V: VirtualActor> {
    pub(crate) context: Arc<V::Context>,
    pub(crate) config: RuntimeConfig,
    pub(crate) placement: Arc<dyn Placement<V::Key>>,
    pub(crate) slots: DashMap<V::Key, Arc<Slot<V>>>,
    pub(crate) activation_permits: Arc<Semaphore>,
    /// `max_live_actors` permits; a slot holds one from activation start until fully stopped.
    pub(crate) capacity: Option<Arc<Semaphore>>,
    /// Activations waiting for a capacity permit.
    pub(crate) capacity_waiters: AtomicUsize,
    /// Started actors in the order they were last used: eviction and idle passivation.
    pub(crate) recency: Recency<V>,
    /// Evictions requested whose actor has not fully stopped yet.
    pub(crate) evictions_in_flight: AtomicUsize,
    pub(crate) counters: Counters,
    pub(crate) actor_name: &'static str,
    pub(crate) epoch: Instant,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    /// Where calls wait out their timeouts.
    pub(crate) deadlines: Arc<Deadlines>,
    next_generation: AtomicU64,
    shutting_down: AtomicBool,
}

impl<V: VirtualActor> Core<V> {
    /// The shared state of a new directory: no slots, nothing running.
    pub(crate) fn new(
        context: Arc<V::Context>,
        config: RuntimeConfig,
        placement: Arc<dyn Placement<V::Key>>,
    ) -> Self {
        let config = config.normalized();
        let actor_name = std::any::type_name::<V>();
        let runtime = tokio::runtime::Handle::try_current().ok();
        Self {
            deadlines: Deadlines::start(config.call_timeout, runtime.as_ref()),
            context,
            placement,
            slots: DashMap::new(),
            activation_permits: Arc::new(Semaphore::new(config.max_concurrent_activations)),
            capacity: config.max_live_actors.map(|n| Arc::new(Semaphore::new(n))),
            capacity_waiters: AtomicUsize::new(0),
            recency: Recency::new(),
            evictions_in_flight: AtomicUsize::new(0),
            counters: Counters::new(actor_name),
            actor_name,
            epoch: Instant::now(),
            runtime,
            next_generation: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            config,
        }
    }

    /// A generation number no slot of this directory had before.
    pub(crate) fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Stops accepting calls and asks every started actor to drain and passivate.
    /// Activations still in progress see the flag and stop their actor themselves.
    pub(crate) fn begin_shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        fence(Ordering::SeqCst);
        tracing::debug!(actor = self.actor_name, "actor directory shutting down");
        for entry in &self.slots {
            entry.value().request_stop(PassivationReason::Shutdown);
        }
    }
}
