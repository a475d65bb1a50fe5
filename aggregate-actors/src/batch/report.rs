//! What a batch did.

use std::time::Duration;

use crate::error::ExecutorError;

/// What a batch did.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Aggregates considered.
    pub aggregates: u64,
    /// Snapshots written.
    pub snapshotted: u64,
    /// Aggregates skipped because their newest snapshot was already current.
    pub skipped_current: u64,
    /// Ids with no events (nothing to snapshot).
    pub not_found: u64,
    /// Aggregates whose snapshot failed: the first ones with their error (at most 100).
    pub failures: Vec<(String, ExecutorError)>,
    /// How many failed in all.
    pub failed: u64,
    /// Events covered by the snapshots written.
    pub events: u64,
    /// Every id up to and including this one is done (in ascending order); pass it as
    /// [`BatchOptions::after`](super::BatchOptions::after) to resume an interrupted rebuild.
    pub done_through: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl BatchReport {
    /// Aggregates per second.
    pub fn aggregates_per_second(&self) -> f64 {
        per_second(self.aggregates, self.elapsed)
    }

    /// Events covered by written snapshots per second.
    pub fn events_per_second(&self) -> f64 {
        per_second(self.events, self.elapsed)
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}
