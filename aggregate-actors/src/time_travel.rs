//! Time travel: [`Executor::reconstruct`] rebuilds an aggregate at a past version or time from
//! the stores, and [`Executor::reconstruct_with_archive`] lets it start from archived
//! snapshots too.

use std::sync::Arc;
use std::time::Instant;

use event_stores::{SnapshotStore, StreamId};

use crate::aggregate::Aggregate;
use crate::archive_view::ArchiveView;
use crate::error::ExecutorError;
use crate::executor::Executor;
use crate::hydrate::{Target, hydrate};
use crate::outcome::{At, Reconstruction};

impl Executor {
    /// Rebuilds the state of aggregate `id` at a past version or time from the stores, using
    /// the newest valid snapshot at or before the target. The live actor is not touched, so in
    /// a cluster this runs on the node asked: the stores are shared and hold only durable
    /// events, so every node computes the same answer without a hop.
    ///
    /// An aggregate with no events is [`ExecutorError::NotFound`]; a version past the stream's
    /// end is [`ExecutorError::VersionNotReached`]; a time before the first event gives the
    /// default state at version 0.
    pub async fn reconstruct<A: Aggregate>(
        &self,
        id: &str,
        at: At,
    ) -> Result<Reconstruction<A>, ExecutorError> {
        let snapshots = Arc::clone(&self.registration::<A>(id)?.context.snapshots);
        self.reconstruct_from::<A>(id, at, &*snapshots).await
    }

    /// [`reconstruct`](Self::reconstruct), also starting from the snapshots retention moved to
    /// the type's archive ([`AggregateSettings::archive`](crate::AggregateSettings::archive)):
    /// far back in time, an archived snapshot near the target saves replaying from the start.
    /// Without an archive it is `reconstruct`.
    pub async fn reconstruct_with_archive<A: Aggregate>(
        &self,
        id: &str,
        at: At,
    ) -> Result<Reconstruction<A>, ExecutorError> {
        let context = &self.registration::<A>(id)?.context;
        match &context.settings.archive {
            Some(archive) => {
                let view = ArchiveView::new(Arc::clone(&context.snapshots), Arc::clone(archive));
                self.reconstruct_from::<A>(id, at, &view).await
            }
            None => self.reconstruct::<A>(id, at).await,
        }
    }

    async fn reconstruct_from<A: Aggregate>(
        &self,
        id: &str,
        at: At,
        snapshots: &dyn SnapshotStore,
    ) -> Result<Reconstruction<A>, ExecutorError> {
        let registration = self.registration::<A>(id)?;
        let stream = StreamId::new(A::TYPE, id)?;
        let current = self.event_store().stream_version(&stream).await?;
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
            snapshots,
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
}
