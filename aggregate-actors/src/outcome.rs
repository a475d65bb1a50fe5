//! What callers get back: a command's [`Committed`] outcome, an aggregate's [`StateView`], a
//! [`Reconstruction`] of its past, and the executor's statistics.

use std::time::Duration;

use actor_runtime::RuntimeStats;
use chrono::{DateTime, Utc};
use event_stores::CrashSafety;

use crate::aggregate::Aggregate;
use crate::command::CommandId;
use crate::metrics::SnapshotOrigin;
use crate::metrics::{ActivationReport, AggregateStats};
use crate::resident::ResidentStats;

/// The outcome of a successful command.
pub struct Committed<A: Aggregate> {
    /// The stream version after the command (for a duplicate: after the original command).
    pub version: u64,
    /// The events the command stored (empty if it decided nothing needed to happen).
    pub events: Vec<A::Event>,
    /// The command's id.
    pub command_id: CommandId,
    /// True when this command id had already been applied: nothing was decided or stored now,
    /// and `version` and `events` are those of the original command.
    pub duplicate: bool,
}

/// The current state of an aggregate, as its live actor holds it.
pub struct StateView<A: Aggregate> {
    /// The state.
    pub state: A::State,
    /// Its version.
    pub version: u64,
    /// How the actor holding it was activated.
    pub activation: ActivationReport,
}

impl<A: Aggregate> std::fmt::Debug for Committed<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("version", &self.version)
            .field("events", &self.events)
            .field("command_id", &self.command_id)
            .field("duplicate", &self.duplicate)
            .finish()
    }
}

impl<A: Aggregate> std::fmt::Debug for StateView<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("state", &self.state)
            .field("version", &self.version)
            .field("activation", &self.activation)
            .finish()
    }
}

impl<A: Aggregate> Clone for StateView<A> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            version: self.version,
            activation: self.activation.clone(),
        }
    }
}

/// The point in an aggregate's history to reconstruct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum At {
    /// Right after this version.
    Version(u64),
    /// With every event recorded at or before this instant.
    Time(DateTime<Utc>),
}

/// The state of an aggregate at a past point, and how it was obtained.
pub struct Reconstruction<A: Aggregate> {
    /// The state.
    pub state: A::State,
    /// The version reached.
    pub version: u64,
    /// When the event at that version was recorded (None at version 0).
    pub reached_at: Option<DateTime<Utc>>,
    /// The snapshot it started from, if a valid one was at or before the target.
    pub from_snapshot: Option<SnapshotOrigin>,
    /// Invalid snapshots skipped on the way.
    pub snapshots_skipped: u32,
    /// Events replayed after the snapshot.
    pub events_replayed: u64,
    /// Wall time taken.
    pub elapsed: Duration,
}

impl<A: Aggregate> Reconstruction<A> {
    /// The version of the snapshot it started from, if any (as
    /// [`ActivationReport::snapshot_version`](crate::ActivationReport::snapshot_version)).
    pub fn snapshot_version(&self) -> Option<u64> {
        self.from_snapshot.map(|s| s.version)
    }
}

impl<A: Aggregate> std::fmt::Debug for Reconstruction<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconstruction")
            .field("state", &self.state)
            .field("version", &self.version)
            .field("reached_at", &self.reached_at)
            .field("from_snapshot", &self.from_snapshot)
            .field("snapshots_skipped", &self.snapshots_skipped)
            .field("events_replayed", &self.events_replayed)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

/// Statistics of one registered aggregate type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeStats {
    /// Commands, activations, replays, snapshots.
    pub aggregate: AggregateStats,
    /// Live actors, activations, passivations, crashes, overloads.
    pub runtime: RuntimeStats,
    /// Aggregates kept in memory without an actor, promotions and demotions.
    pub resident: ResidentStats,
}

/// Statistics of every registered type.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorStats {
    /// One entry per registered aggregate type, in registration order.
    pub types: Vec<TypeStats>,
    /// Whether acknowledged commands survive a crash of the event store's server (checked when
    /// a PostgreSQL store connects; a warning is logged when they would not).
    pub event_store: CrashSafety,
}

impl ExecutorStats {
    /// The entry of one aggregate type.
    pub fn of(&self, aggregate_type: &str) -> Option<&TypeStats> {
        self.types
            .iter()
            .find(|t| t.aggregate.aggregate_type == aggregate_type)
    }
}
