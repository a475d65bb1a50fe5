//! [`ProjectionError`]: why a projection could not make progress.

use event_stores::StoreError;

use crate::projection::HandlerError;

/// Why a projection's batch was not handled and checkpointed. The runner retries it after a
/// back-off; the latest error shows in [`ProjectionStats::last_error`](crate::ProjectionStats).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading the event feed failed.
    #[error("reading the event feed: {0}")]
    Store(#[from] StoreError),
    /// The projection's handler (or reset) returned an error.
    #[error("projection {projection}: {source}")]
    Handler {
        /// The projection's name.
        projection: String,
        /// What the handler said.
        #[source]
        source: HandlerError,
    },
    /// Reading or writing a checkpoint failed.
    #[error("checkpoint of {projection}: {message}")]
    Checkpoint {
        /// The projection's name.
        projection: String,
        /// What went wrong.
        message: String,
    },
    /// Another runner moved this projection's checkpoint since this one read it: this batch
    /// was rolled back, and the runner goes on from the checkpoint it finds.
    #[error("projection {projection}: its checkpoint moved under this runner (another runner?)")]
    CheckpointMoved {
        /// The projection's name.
        projection: String,
    },
}
