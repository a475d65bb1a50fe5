//! When a live aggregate snapshots: the strategy after each stored command, and the hand-off of
//! the encoded state to the background writer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use event_stores::SnapshotRecord;
use tokio::sync::oneshot;

use super::AggregateActor;
use crate::aggregate::Aggregate;
use crate::codec;
use crate::hydrate::open_snapshot;
use crate::snapshot_writer::WriteOutcome;
use crate::strategy::{ActivationCost, SnapshotContext};

impl<A: Aggregate> AggregateActor<A> {
    /// Runs the strategy (user code, after the append): a panic in it is caught and counted
    /// as a failed snapshot, so it can never turn a stored command into a failure.
    pub(super) fn consider_snapshot(&mut self, new_events: &[A::Event]) {
        let considered = catch_unwind(AssertUnwindSafe(|| self.decide_snapshot(new_events)));
        if considered.is_err() {
            self.context.metrics.snapshot_failed();
            tracing::error!(stream = %self.stream, version = self.version, "snapshot strategy or state encoding panicked after a stored command; no snapshot taken");
        }
    }

    fn decide_snapshot(&mut self, new_events: &[A::Event]) {
        let mut context = SnapshotContext::<A>::new(&self.state, new_events, self.version);
        context.last_snapshot_version = self.last_snapshot_version;
        context.since_last_snapshot = self.last_snapshot_at.elapsed();
        context.activation = ActivationCost {
            events_replayed: self.activation.events_replayed,
            elapsed: self.activation.elapsed,
        };
        context.snapshotted_since_activation = self.snapshotted_since_activation;
        context.event_bytes_since_snapshot = self.event_bytes_since_snapshot;
        context.last_snapshot_size = self.last_snapshot_size;
        if self.context.settings.strategy.should_snapshot(&context) {
            self.take_snapshot(Vec::new());
        }
    }

    /// Encodes the state here (so no copy of it is needed) and hands the bytes to the
    /// background writer. Returns false when there is nothing to snapshot or encoding failed.
    pub(super) fn take_snapshot(&mut self, waiters: Vec<oneshot::Sender<WriteOutcome>>) -> bool {
        let Some(last_event_id) = self.last_event_id else {
            return false;
        };
        let encoded = match codec::encode_snapshot(&self.state, &self.recent.to_vec()) {
            Ok(encoded) => encoded,
            Err(error) => {
                self.context.metrics.snapshot_failed();
                tracing::warn!(stream = %self.stream, %error, "state could not be encoded for a snapshot");
                return false;
            }
        };
        let encoded_size = encoded.len() as u64;
        self.context.submit_snapshot(
            self.stream.clone(),
            self.version,
            last_event_id,
            encoded,
            waiters,
        );
        self.last_snapshot_version = self.version;
        self.last_snapshot_size = encoded_size;
        self.event_bytes_since_snapshot = 0;
        self.last_snapshot_at = Instant::now();
        self.snapshotted_since_activation = true;
        true
    }
}

/// Checks a stored snapshot the way activation will (see [`open_snapshot`]). Retention deletes
/// nothing until the new snapshot passes.
pub(super) fn verify_snapshot<A: Aggregate>(record: &SnapshotRecord) -> Result<(), String> {
    open_snapshot::<A>(record).map(|_| ())
}
