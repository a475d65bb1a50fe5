//! What a runner drives: a projection and its checkpoint, saved together or one after the
//! other.

use std::sync::Arc;

use async_trait::async_trait;
use event_stores::RecordedEvent;

use crate::checkpoint::Checkpoints;
use crate::error::ProjectionError;
use crate::projection::{EventFilter, Projection};

/// What a runner drives: a projection with its checkpoint. An at-least-once projection saves
/// the checkpoint after handling; a PostgreSQL one commits both in one transaction.
#[async_trait]
pub(crate) trait Sink: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn filter(&self) -> EventFilter;
    /// The checkpointed position.
    async fn position(&self) -> Result<u64, ProjectionError>;
    /// Handles `events` (already filtered, possibly empty) and moves the checkpoint from `from`
    /// to `to`.
    async fn apply(
        &self,
        events: &[RecordedEvent],
        from: u64,
        to: u64,
    ) -> Result<(), ProjectionError>;
    /// Sets the checkpoint to 0 and clears the read model. On failure the checkpoint may be 0
    /// with the read model untouched or partly cleared, or unchanged with the read model whole,
    /// never moved past events the read model lacks: the runner reloads it.
    async fn reset(&self) -> Result<(), ProjectionError>;
}

/// An at-least-once [`Projection`] with its [`Checkpoints`].
pub(crate) struct AtLeastOnce<P> {
    pub(crate) projection: P,
    pub(crate) checkpoints: Arc<dyn Checkpoints>,
}

#[async_trait]
impl<P: Projection> Sink for AtLeastOnce<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn filter(&self) -> EventFilter {
        self.projection.filter()
    }

    async fn position(&self) -> Result<u64, ProjectionError> {
        self.checkpoints.load(self.projection.name()).await
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        _from: u64,
        to: u64,
    ) -> Result<(), ProjectionError> {
        if !events.is_empty() {
            self.projection
                .handle(events)
                .await
                .map_err(|source| ProjectionError::Handler {
                    projection: self.name().to_owned(),
                    source,
                })?;
        }
        self.checkpoints.save(self.name(), to).await
    }

    /// The checkpoint first: a crash (or a failure) between the two then replays every event
    /// into a read model that was not cleared, which at least once allows, instead of leaving
    /// a cleared read model behind a checkpoint that skips what it held.
    async fn reset(&self) -> Result<(), ProjectionError> {
        self.checkpoints.save(self.name(), 0).await?;
        self.projection
            .reset()
            .await
            .map_err(|source| ProjectionError::Handler {
                projection: self.name().to_owned(),
                source,
            })
    }
}
