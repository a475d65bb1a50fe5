//! What every registered type of an executor shares: its stores, its snapshot writer, the
//! placement of its ids and its transport to other nodes. Beneath both the builder that makes
//! it and the executor that holds it.

use std::sync::Arc;

use actor_runtime::{Placement, Transport};
use event_stores::{EventStore, SnapshotStore};

use crate::snapshot_writer::SnapshotWriter;

/// Gives the placement of each aggregate type (which ids this node serves).
pub type PlacementFactory = Arc<dyn Fn(&'static str) -> Arc<dyn Placement<String>> + Send + Sync>;

/// The shared parts, made once by the builder and handed to each type's registration.
pub(crate) struct Shared {
    pub(crate) events: Arc<dyn EventStore>,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) writer: SnapshotWriter,
    pub(crate) placement: PlacementFactory,
    pub(crate) transport: Option<Arc<dyn Transport>>,
}
