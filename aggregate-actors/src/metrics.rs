//! Counters of one aggregate type, readable in process ([`AggregateStats`]) and published
//! through the `metrics` facade (labelled `aggregate = TYPE`) for any exporter.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use chrono::{DateTime, Utc};

use metrics::{Counter, Histogram, counter, histogram};

mod days;

pub use days::{DAYS_KEPT, SnapshotDay};

/// The snapshot a rebuild started from: the same shape in an [`ActivationReport`] and a
/// [`Reconstruction`](crate::Reconstruction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOrigin {
    /// The snapshot's version.
    pub version: u64,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// The size of its encoded body (state and recent command ids) before compression.
    pub size: u64,
}

/// What one activation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivationReport {
    /// The snapshot it started from, if a valid one was found.
    pub from_snapshot: Option<SnapshotOrigin>,
    /// Snapshots skipped as invalid before that one (or before a full replay).
    pub snapshots_skipped: u32,
    /// Events replayed after the snapshot.
    pub events_replayed: u64,
    /// Version reached.
    pub version: u64,
    /// Wall time of the activation.
    pub elapsed: Duration,
    /// It started from the aggregate's resident entry (see
    /// [`AggregateSettings::resident`](crate::AggregateSettings::resident)): no store read.
    pub from_resident: bool,
}

impl ActivationReport {
    /// The version of the snapshot it started from, if any.
    pub fn snapshot_version(&self) -> Option<u64> {
        self.from_snapshot.map(|s| s.version)
    }
}

/// A point-in-time copy of one aggregate type's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggregateStats {
    /// The aggregate type.
    pub aggregate_type: &'static str,
    /// Commands that stored events or were accepted with no events.
    pub commands_succeeded: u64,
    /// Commands rejected by the aggregate.
    pub commands_rejected: u64,
    /// Commands that failed for another reason (store, conflict, codec).
    pub commands_failed: u64,
    /// Commands answered as duplicates of an earlier command with the same id (nothing decided,
    /// nothing stored).
    pub commands_duplicate: u64,
    /// Commands dropped before `decide` because their deadline passed or their caller left.
    pub commands_expired: u64,
    /// Commands whose append outcome was unknown when answered (timeout or connection lost
    /// after sending).
    pub commands_indeterminate: u64,
    /// Version conflicts met (each retry counts).
    pub conflicts: u64,
    /// Activations (state rebuilt from the stores, or started empty for a creation command).
    pub activations: u64,
    /// Activations that read nothing: a creation command ([`Aggregate::is_creation`]) on a
    /// new stream, decided on the default state and stored with expected version 0.
    ///
    /// [`Aggregate::is_creation`]: crate::Aggregate::is_creation
    pub activations_without_read: u64,
    /// Creation commands whose stream existed after all: the append at version 0 conflicted
    /// (or the decision could not be verified by an append), so the actor read the stream and
    /// decided again. Not counted in [`conflicts`](AggregateStats::conflicts).
    pub creation_hints_missed: u64,
    /// Events replayed over all activations.
    pub events_replayed: u64,
    /// Most events replayed by one activation.
    pub max_events_replayed: u64,
    /// Total activation wall time.
    pub activation_time: Duration,
    /// Longest activation.
    pub max_activation_time: Duration,
    /// The most recent activation.
    pub last_activation: Option<ActivationReport>,
    /// Snapshots written.
    pub snapshots_taken: u64,
    /// Of [`snapshots_taken`](AggregateStats::snapshots_taken), those written as deltas against
    /// an earlier full snapshot (incremental snapshots).
    pub snapshots_delta: u64,
    /// Snapshot writes (or encodings) that failed; commands were unaffected.
    pub snapshots_failed: u64,
    /// Snapshots found invalid on load and skipped.
    pub snapshots_skipped_invalid: u64,
    /// Snapshot requests dropped because a newer one for the same aggregate superseded them or
    /// the writer's queue was full.
    pub snapshots_superseded: u64,
    /// Bytes stored by snapshot writes.
    pub snapshot_bytes_stored: u64,
    /// Bytes those snapshots had before compression.
    pub snapshot_bytes_uncompressed: u64,
    /// Commands delivered by [timers](crate::timer) (their outcomes are counted with the
    /// other commands above as well).
    pub timer_ticks: u64,
    /// Snapshots deleted by retention.
    pub snapshots_deleted: u64,
    /// Snapshots moved to the archive by retention.
    pub snapshots_archived: u64,
    /// Per UTC day: created, deleted, archived, bytes, creation time, as counted by this
    /// process (the last 31 days it saw, oldest first). The snapshot store keeps the sum over
    /// every process and restart: [`Executor::snapshot_days`](crate::Executor::snapshot_days).
    pub snapshot_days: Vec<SnapshotDay>,
}

impl AggregateStats {
    /// Mean events replayed per activation: the "average replay size".
    pub fn mean_replay_size(&self) -> f64 {
        if self.activations == 0 {
            0.0
        } else {
            self.events_replayed as f64 / self.activations as f64
        }
    }

    /// Mean activation time.
    pub fn mean_activation_time(&self) -> Duration {
        if self.activations == 0 {
            Duration::ZERO
        } else {
            self.activation_time / u32::try_from(self.activations).unwrap_or(u32::MAX)
        }
    }
}

/// The live counters. Facade handles are resolved once at registration so the command path
/// does not look metrics up by name.
pub(crate) struct AggregateMetrics {
    aggregate_type: &'static str,
    commands_succeeded: AtomicU64,
    commands_rejected: AtomicU64,
    commands_failed: AtomicU64,
    commands_duplicate: AtomicU64,
    commands_expired: AtomicU64,
    commands_indeterminate: AtomicU64,
    conflicts: AtomicU64,
    activations: AtomicU64,
    activations_without_read: AtomicU64,
    creation_hints_missed: AtomicU64,
    events_replayed: AtomicU64,
    max_events_replayed: AtomicU64,
    activation_micros: AtomicU64,
    max_activation_micros: AtomicU64,
    last_activation: parking_lot::Mutex<Option<ActivationReport>>,
    snapshots_taken: AtomicU64,
    snapshots_delta: AtomicU64,
    snapshots_failed: AtomicU64,
    snapshots_skipped_invalid: AtomicU64,
    snapshots_superseded: AtomicU64,
    snapshot_bytes_stored: AtomicU64,
    snapshot_bytes_uncompressed: AtomicU64,
    timer_ticks: AtomicU64,
    snapshots_deleted: AtomicU64,
    snapshots_archived: AtomicU64,
    days: days::Days,
    facade: Facade,
}

struct Facade {
    commands_ok: Counter,
    commands_rejected: Counter,
    commands_failed: Counter,
    commands_duplicate: Counter,
    commands_expired: Counter,
    commands_indeterminate: Counter,
    conflicts: Counter,
    activations: Counter,
    replayed: Histogram,
    activation_seconds: Histogram,
    snapshots_taken: Counter,
    snapshots_delta: Counter,
    snapshots_failed: Counter,
    snapshots_skipped: Counter,
    snapshot_bytes: Counter,
    timer_ticks: Counter,
}

impl AggregateMetrics {
    pub(crate) fn new(aggregate_type: &'static str) -> Self {
        let label = ("aggregate", aggregate_type);
        Self {
            aggregate_type,
            commands_succeeded: AtomicU64::new(0),
            commands_rejected: AtomicU64::new(0),
            commands_failed: AtomicU64::new(0),
            commands_duplicate: AtomicU64::new(0),
            commands_expired: AtomicU64::new(0),
            commands_indeterminate: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            activations: AtomicU64::new(0),
            activations_without_read: AtomicU64::new(0),
            creation_hints_missed: AtomicU64::new(0),
            events_replayed: AtomicU64::new(0),
            max_events_replayed: AtomicU64::new(0),
            activation_micros: AtomicU64::new(0),
            max_activation_micros: AtomicU64::new(0),
            last_activation: parking_lot::Mutex::new(None),
            snapshots_taken: AtomicU64::new(0),
            snapshots_delta: AtomicU64::new(0),
            snapshots_failed: AtomicU64::new(0),
            snapshots_skipped_invalid: AtomicU64::new(0),
            snapshots_superseded: AtomicU64::new(0),
            snapshot_bytes_stored: AtomicU64::new(0),
            snapshot_bytes_uncompressed: AtomicU64::new(0),
            timer_ticks: AtomicU64::new(0),
            snapshots_deleted: AtomicU64::new(0),
            snapshots_archived: AtomicU64::new(0),
            days: days::Days::default(),
            facade: Facade {
                commands_ok: counter!("aggregate_commands_total", label.0 => label.1, "outcome" => "ok"),
                commands_rejected: counter!("aggregate_commands_total", label.0 => label.1, "outcome" => "rejected"),
                commands_failed: counter!("aggregate_commands_total", label.0 => label.1, "outcome" => "failed"),
                commands_duplicate: counter!("aggregate_commands_total", label.0 => label.1, "outcome" => "duplicate"),
                commands_expired: counter!("aggregate_commands_total", label.0 => label.1, "outcome" => "expired"),
                commands_indeterminate: counter!("aggregate_commands_total", label.0 => label.1, "outcome" => "indeterminate"),
                conflicts: counter!("aggregate_conflicts_total", label.0 => label.1),
                activations: counter!("aggregate_activations_total", label.0 => label.1),
                replayed: histogram!("aggregate_events_replayed", label.0 => label.1),
                activation_seconds: histogram!("aggregate_activation_seconds", label.0 => label.1),
                snapshots_taken: counter!("aggregate_snapshots_total", label.0 => label.1, "outcome" => "taken"),
                snapshots_delta: counter!("aggregate_snapshots_total", label.0 => label.1, "outcome" => "taken_delta"),
                snapshots_failed: counter!("aggregate_snapshots_total", label.0 => label.1, "outcome" => "failed"),
                snapshots_skipped: counter!("aggregate_snapshots_total", label.0 => label.1, "outcome" => "skipped_invalid"),
                snapshot_bytes: counter!("aggregate_snapshot_bytes_total", label.0 => label.1),
                timer_ticks: counter!("aggregate_timer_ticks_total", label.0 => label.1),
            },
        }
    }

    pub(crate) fn command_succeeded(&self) {
        self.commands_succeeded.fetch_add(1, Relaxed);
        self.facade.commands_ok.increment(1);
    }

    pub(crate) fn command_rejected(&self) {
        self.commands_rejected.fetch_add(1, Relaxed);
        self.facade.commands_rejected.increment(1);
    }

    pub(crate) fn command_failed(&self) {
        self.commands_failed.fetch_add(1, Relaxed);
        self.facade.commands_failed.increment(1);
    }

    pub(crate) fn command_duplicate(&self) {
        self.commands_duplicate.fetch_add(1, Relaxed);
        self.facade.commands_duplicate.increment(1);
    }

    pub(crate) fn command_expired(&self) {
        self.commands_expired.fetch_add(1, Relaxed);
        self.facade.commands_expired.increment(1);
    }

    pub(crate) fn command_indeterminate(&self) {
        self.commands_indeterminate.fetch_add(1, Relaxed);
        self.facade.commands_indeterminate.increment(1);
    }

    pub(crate) fn conflict(&self) {
        self.conflicts.fetch_add(1, Relaxed);
        self.facade.conflicts.increment(1);
    }

    pub(crate) fn activated(&self, report: &ActivationReport) {
        let micros = u64::try_from(report.elapsed.as_micros()).unwrap_or(u64::MAX);
        self.activations.fetch_add(1, Relaxed);
        self.events_replayed
            .fetch_add(report.events_replayed, Relaxed);
        self.max_events_replayed
            .fetch_max(report.events_replayed, Relaxed);
        self.activation_micros.fetch_add(micros, Relaxed);
        self.max_activation_micros.fetch_max(micros, Relaxed);
        *self.last_activation.lock() = Some(report.clone());
        self.facade.activations.increment(1);
        self.facade.replayed.record(report.events_replayed as f64);
        self.facade
            .activation_seconds
            .record(report.elapsed.as_secs_f64());
    }

    /// A creation command's actor started on the default state and its append at version 0
    /// succeeded: an activation that read nothing.
    pub(crate) fn activated_without_read(&self, report: &ActivationReport) {
        self.activations_without_read.fetch_add(1, Relaxed);
        self.activated(report);
    }

    pub(crate) fn creation_hint_missed(&self) {
        self.creation_hints_missed.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot_skipped_invalid(&self) {
        self.snapshots_skipped_invalid.fetch_add(1, Relaxed);
        self.facade.snapshots_skipped.increment(1);
    }

    /// A snapshot of `stored` bytes (`uncompressed` before compression) written in `took`.
    pub(crate) fn snapshot_taken(&self, stored: u64, uncompressed: u64, took: Duration) {
        self.days.record(|day| {
            day.created += 1;
            day.bytes += stored;
            day.creation_time += took;
        });
        self.snapshots_taken.fetch_add(1, Relaxed);
        self.snapshot_bytes_stored.fetch_add(stored, Relaxed);
        self.snapshot_bytes_uncompressed
            .fetch_add(uncompressed, Relaxed);
        self.facade.snapshots_taken.increment(1);
        self.facade.snapshot_bytes.increment(stored);
    }

    /// Retention deleted `count` snapshots.
    pub(crate) fn snapshots_deleted(&self, count: u64) {
        if count > 0 {
            self.snapshots_deleted.fetch_add(count, Relaxed);
            self.days.record(|day| day.deleted += count);
            counter!("aggregate_snapshots_removed_total", "aggregate" => self.aggregate_type, "how" => "deleted")
                .increment(count);
        }
    }

    /// Retention moved `count` snapshots to the archive.
    pub(crate) fn snapshots_archived(&self, count: u64) {
        if count > 0 {
            self.snapshots_archived.fetch_add(count, Relaxed);
            self.days.record(|day| day.archived += count);
            counter!("aggregate_snapshots_removed_total", "aggregate" => self.aggregate_type, "how" => "archived")
                .increment(count);
        }
    }

    /// The snapshot just counted by `snapshot_taken` was a delta.
    pub(crate) fn snapshot_was_delta(&self) {
        self.snapshots_delta.fetch_add(1, Relaxed);
        self.facade.snapshots_delta.increment(1);
    }

    pub(crate) fn snapshot_failed(&self) {
        self.snapshots_failed.fetch_add(1, Relaxed);
        self.facade.snapshots_failed.increment(1);
    }

    pub(crate) fn timer_ticked(&self) {
        self.timer_ticks.fetch_add(1, Relaxed);
        self.facade.timer_ticks.increment(1);
    }

    /// The type these counters are of.
    pub(crate) fn aggregate_type(&self) -> &'static str {
        self.aggregate_type
    }

    /// Per-day snapshot figures counted since the last call, for the snapshot store.
    pub(crate) fn take_unsaved_days(&self) -> Vec<SnapshotDay> {
        self.days.take_unsaved()
    }

    /// Puts back per-day figures the snapshot store did not take, for the next try.
    pub(crate) fn put_back_unsaved_days(&self, days: Vec<SnapshotDay>) {
        self.days.put_back(days);
    }

    pub(crate) fn snapshot_superseded(&self) {
        self.snapshots_superseded.fetch_add(1, Relaxed);
    }

    pub(crate) fn stats(&self) -> AggregateStats {
        AggregateStats {
            aggregate_type: self.aggregate_type,
            commands_succeeded: self.commands_succeeded.load(Relaxed),
            commands_rejected: self.commands_rejected.load(Relaxed),
            commands_failed: self.commands_failed.load(Relaxed),
            commands_duplicate: self.commands_duplicate.load(Relaxed),
            commands_expired: self.commands_expired.load(Relaxed),
            commands_indeterminate: self.commands_indeterminate.load(Relaxed),
            conflicts: self.conflicts.load(Relaxed),
            activations: self.activations.load(Relaxed),
            activations_without_read: self.activations_without_read.load(Relaxed),
            creation_hints_missed: self.creation_hints_missed.load(Relaxed),
            events_replayed: self.events_replayed.load(Relaxed),
            max_events_replayed: self.max_events_replayed.load(Relaxed),
            activation_time: Duration::from_micros(self.activation_micros.load(Relaxed)),
            max_activation_time: Duration::from_micros(self.max_activation_micros.load(Relaxed)),
            last_activation: self.last_activation.lock().clone(),
            snapshots_taken: self.snapshots_taken.load(Relaxed),
            snapshots_delta: self.snapshots_delta.load(Relaxed),
            snapshots_failed: self.snapshots_failed.load(Relaxed),
            snapshots_skipped_invalid: self.snapshots_skipped_invalid.load(Relaxed),
            snapshots_superseded: self.snapshots_superseded.load(Relaxed),
            snapshot_bytes_stored: self.snapshot_bytes_stored.load(Relaxed),
            snapshot_bytes_uncompressed: self.snapshot_bytes_uncompressed.load(Relaxed),
            timer_ticks: self.timer_ticks.load(Relaxed),
            snapshots_deleted: self.snapshots_deleted.load(Relaxed),
            snapshots_archived: self.snapshots_archived.load(Relaxed),
            snapshot_days: self.days.snapshot(),
        }
    }
}
