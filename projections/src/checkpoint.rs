//! [`Checkpoints`]: where an at-least-once projection records how far it got.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::error::ProjectionError;

/// Positions of projections by name: the position of the last event each one has handled
/// (0 = none yet).
#[async_trait]
pub trait Checkpoints: Send + Sync + 'static {
    /// The saved position of `projection`, 0 when it has none.
    async fn load(&self, projection: &str) -> Result<u64, ProjectionError>;
    /// Records that `projection` has handled every event up to `position`.
    async fn save(&self, projection: &str, position: u64) -> Result<(), ProjectionError>;
}

/// Checkpoints in process memory: a projection started again in the same process resumes; a
/// new process starts from the first event (right for a read model that is itself in memory).
#[derive(Debug, Default)]
pub struct InMemoryCheckpoints {
    positions: Mutex<HashMap<String, u64>>,
}

impl InMemoryCheckpoints {
    /// No checkpoints yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Checkpoints for InMemoryCheckpoints {
    async fn load(&self, projection: &str) -> Result<u64, ProjectionError> {
        Ok(self.positions.lock().get(projection).copied().unwrap_or(0))
    }

    async fn save(&self, projection: &str, position: u64) -> Result<(), ProjectionError> {
        self.positions
            .lock()
            .insert(projection.to_owned(), position);
        Ok(())
    }
}
