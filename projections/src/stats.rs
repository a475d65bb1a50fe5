//! How far a projection got.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How far a projection got, and how far behind it is.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStats {
    /// The projection's name.
    pub name: String,
    /// Position of the last event it has handled and checkpointed.
    pub position: u64,
    /// Events handed to it (after its filter) since this runner started.
    pub events_handled: u64,
    /// Events read from the feed since this runner started (its filter's rejects included).
    pub events_read: u64,
    /// Batches checkpointed since this runner started.
    pub batches: u64,
    /// Batches that failed and were retried (not those another runner of the same projection
    /// checkpointed first: [`checkpoint_moves`](Self::checkpoint_moves) counts those).
    pub retries: u64,
    /// Batches rolled back because the checkpoint had moved since this runner read it (another
    /// runner of the same projection got there first, or its row was changed or deleted by
    /// hand). The runner pauses briefly and goes on from the checkpoint it finds; a checkpoint
    /// that keeps moving shows in [`last_error`](Self::last_error) too.
    pub checkpoint_moves: u64,
    /// Whether its last read found the end of the feed.
    pub caught_up: bool,
    /// When the last event it handled was recorded.
    pub last_event_at: Option<DateTime<Utc>>,
    /// How long the oldest event of its last batch had waited since it was recorded when that
    /// batch was checkpointed (catch-up or live delay); zero once a read finds nothing new.
    pub lag: Duration,
    /// Events in the feed after its position, counted at most once a second while it is
    /// behind ([`EventStore::count_after`](event_stores::EventStore::count_after)); zero once caught up.
    pub events_behind: u64,
    /// The last error, until a batch succeeds again: a failed batch, or a checkpoint that moved
    /// under this runner eight times in a row.
    pub last_error: Option<String>,
}
