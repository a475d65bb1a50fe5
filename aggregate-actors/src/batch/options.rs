//! How a batch runs, and the progress it reports as it goes.

use std::sync::Arc;

/// A batch's progress, handed to [`BatchOptions::progress`] after each aggregate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchProgress {
    /// Aggregates done (snapshotted, skipped or failed).
    pub done: u64,
    /// Aggregates snapshotted.
    pub snapshotted: u64,
    /// Events covered by the snapshots written (their versions, summed).
    pub events: u64,
}

/// Called with the progress after each aggregate.
pub type ProgressFn = Arc<dyn Fn(BatchProgress) + Send + Sync>;

/// How a batch runs.
#[derive(Clone)]
pub struct BatchOptions {
    /// Aggregates snapshotted at once (default 8; 0 counts as 1). The snapshot writer has its
    /// own bound on writes in flight ([`ExecutorBuilder::snapshot_writers`](crate::ExecutorBuilder::snapshot_writers)).
    pub parallelism: usize,
    /// Skip aggregates whose newest snapshot is of the current state schema and at the
    /// stream's version (default true).
    pub skip_current: bool,
    /// For a rebuild: start after this id (a previous run's [`BatchReport::done_through`](super::BatchReport::done_through)).
    pub after: Option<String>,
    /// Called after each aggregate, e.g. to draw a progress bar.
    pub progress: Option<ProgressFn>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            parallelism: 8,
            skip_current: true,
            after: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for BatchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchOptions")
            .field("parallelism", &self.parallelism)
            .field("skip_current", &self.skip_current)
            .field("after", &self.after)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}
