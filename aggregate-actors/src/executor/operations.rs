//! The executor's operations beside commands and reads: snapshots on demand, passivation,
//! statistics, shutdown and access to the stores.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use event_stores::{EventStore, SnapshotStore};

use super::{Executor, Registered, Registration};
use crate::actor::AggregateMessage;
use crate::aggregate::Aggregate;
use crate::error::ExecutorError;
use crate::outcome::{ExecutorStats, TypeStats};
use crate::remote;

impl Executor {
    /// Takes a snapshot of aggregate `id` now, on the node that serves it, and waits until it
    /// is written. Returns the version snapshotted.
    pub async fn snapshot_now<A: Aggregate>(&self, id: &str) -> Result<u64, ExecutorError> {
        let key = id.to_owned();
        self.query::<A, _, _, _>(
            id,
            &key,
            |registration, left| self.snapshot_local::<A>(registration, &key, left),
            |transport, node, left| async move {
                remote::forward_snapshot::<A>(transport, &node, id, left).await
            },
        )
        .await
    }

    /// Snapshots this node's actor for `id`, never forwarding.
    pub(crate) async fn snapshot_here<A: Aggregate>(&self, id: &str) -> Result<u64, ExecutorError> {
        let registration = self.registration::<A>(id)?;
        let timeout = registration.context.settings.runtime.call_timeout;
        self.snapshot_local(registration, &id.to_owned(), timeout)
            .await
    }

    /// [`snapshot_here`](Self::snapshot_here) with the registration already looked up (and
    /// the id checked) and the directory's key made; the actor is reached within `timeout`.
    async fn snapshot_local<A: Aggregate>(
        &self,
        registration: &Registration<A>,
        key: &String,
        timeout: Duration,
    ) -> Result<u64, ExecutorError> {
        let was_live = registration.directory.is_live(key);
        let written = registration
            .directory
            .call_timeout(key, timeout, |reply| AggregateMessage::SnapshotNow {
                reply,
            })
            .await??;
        let Some(written) = written else {
            self.leave_no_trace::<A>(key, was_live).await;
            return Err(self.not_found::<A>(key));
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

    /// Sends aggregate `id` cold on this node: stops its actor, or demotes its resident entry
    /// (an idle aggregate has no actor, and its entry may be ahead of its last snapshot). Either
    /// way it snapshots on the way out if it is behind and the type snapshots on passivation.
    /// True if it was in memory here (live or resident), false if it was cold already.
    pub async fn passivate<A: Aggregate>(&self, id: &str) -> Result<bool, ExecutorError> {
        let registration = self.registration::<A>(id)?;
        let was_live = registration.directory.passivate(&id.to_owned()).await;
        // After the actor: a requested stop leaves no entry, so this finds one only if the
        // aggregate was resident (as passivate_all and passivate_matching do it).
        let was_resident = registration.context.demote_resident_id(id);
        Ok(was_live || was_resident)
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
}
