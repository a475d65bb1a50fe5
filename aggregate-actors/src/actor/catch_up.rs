//! Bringing a live aggregate's state back to the stored one: after an append that may have
//! run ahead of the store (a conflict, a timeout) or on an activation that only presumed the
//! stream new.

use std::sync::Arc;

use event_stores::StreamId;

use super::{AggregateActor, AggregateContext, CommandCall, deadline};
use crate::aggregate::Aggregate;
use crate::error::{ActivationError, CommandError, ExecutorError};
use crate::hydrate::{Hydrated, Target, hydrate};

impl<A: Aggregate> AggregateActor<A> {
    /// [`catch_up`](Self::catch_up) within the command's deadline; a read that cannot finish
    /// in time stores nothing.
    pub(super) async fn catch_up_by(
        &mut self,
        call: &CommandCall,
    ) -> Result<(), CommandError<A::Error>> {
        if self.is_current() {
            return Ok(());
        }
        match deadline::by(call.deadline, self.catch_up()).await {
            Ok(caught_up) => Ok(caught_up?),
            Err(_) => Err(self.expired(call.command_id)),
        }
    }

    /// Whether the state is the stored one: nothing ran ahead of the store, nothing presumed.
    pub(super) fn is_current(&self) -> bool {
        !self.stale && !self.presumed_new
    }

    /// Rebuilds the state from the stores if it may have run ahead of them, or was only
    /// presumed (a creation command's activation, which then counts as an ordinary one).
    pub(super) async fn catch_up(&mut self) -> Result<(), ExecutorError> {
        if self.is_current() {
            return Ok(());
        }
        // Boxed: a rebuild's future is kilobytes, and every command's future would otherwise
        // carry (and move) it although almost none rebuild.
        let hydrated = Box::pin(load::<A>(&self.context, &self.stream))
            .await
            .map_err(|e| ExecutorError::Activation(Arc::new(e)))?;
        // What size strategies count from: the rebuild's snapshot, unless this actor knows a
        // newer one (a snapshot it handed to the writer that is not stored yet).
        if hydrated.snapshot.map_or(0, |s| s.version) >= self.last_snapshot_version {
            self.last_snapshot_size = hydrated.snapshot.map_or(0, |s| s.size);
            self.event_bytes_since_snapshot = hydrated.event_bytes_replayed;
        }
        if let Some(snapshot) = &hydrated.snapshot {
            self.last_snapshot_version = self.last_snapshot_version.max(snapshot.version);
        }
        if self.presumed_new {
            self.presumed_new = false;
            self.activation = hydrated.report();
            self.context.metrics.activated(&self.activation);
        }
        self.state = hydrated.state;
        self.version = hydrated.version;
        self.last_event_id = hydrated.last_event_id;
        self.recent = hydrated.recent;
        self.stale = false;
        Ok(())
    }
}

pub(super) async fn load<A: Aggregate>(
    context: &AggregateContext<A>,
    stream: &StreamId,
) -> Result<Hydrated<A>, ActivationError> {
    hydrate::<A>(
        &*context.events,
        &*context.snapshots,
        stream,
        Target::Latest,
        context.settings.replay_page_size,
        context.settings.dedup,
        &context.metrics,
    )
    .await
}
