//! [`ClusterPlacement`]: the runtime's answer to "is this key served here?" for one aggregate
//! type, from this node's owned shards.

use std::sync::Arc;

use actor_runtime::Placement;

use crate::owned::OwnedShards;
use crate::shard::shard_of;

/// Serves the ids of one aggregate type whose shard this node owns (and is not draining).
#[derive(Debug, Clone)]
pub struct ClusterPlacement {
    aggregate_type: &'static str,
    owned: Arc<OwnedShards>,
}

impl ClusterPlacement {
    /// The placement of `aggregate_type` on a node owning `owned`.
    pub fn new(aggregate_type: &'static str, owned: Arc<OwnedShards>) -> Self {
        Self {
            aggregate_type,
            owned,
        }
    }
}

impl Placement<String> for ClusterPlacement {
    fn is_local(&self, id: &String) -> bool {
        let shard = shard_of(self.aggregate_type, id, self.owned.shard_count());
        self.owned.serves(shard)
    }
}
