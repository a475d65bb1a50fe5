//! [`ClusterPlacement`]: the runtime's answer to "is this key served here, and if not, where?"
//! for one aggregate type, from this node's owned shards and the route table.

use std::sync::Arc;

use actor_runtime::{Location, Placement};
use uuid::Uuid;

use crate::owned::OwnedShards;
use crate::routes::RouteTable;
use crate::shard::shard_of;

/// Serves the ids of one aggregate type whose shard this node owns (and is not draining), and
/// locates the others on their owners.
#[derive(Debug, Clone)]
pub struct ClusterPlacement {
    aggregate_type: &'static str,
    node_id: Uuid,
    owned: Arc<OwnedShards>,
    routes: Arc<RouteTable>,
}

impl ClusterPlacement {
    /// The placement of `aggregate_type` on node `node_id` owning `owned`.
    pub fn new(
        aggregate_type: &'static str,
        node_id: Uuid,
        owned: Arc<OwnedShards>,
        routes: Arc<RouteTable>,
    ) -> Self {
        Self {
            aggregate_type,
            node_id,
            owned,
            routes,
        }
    }

    fn shard(&self, id: &str) -> u32 {
        shard_of(self.aggregate_type, id, self.owned.shard_count())
    }
}

impl Placement<String> for ClusterPlacement {
    fn is_local(&self, id: &String) -> bool {
        self.owned.serves(self.shard(id))
    }

    fn locate(&self, id: &String) -> Location {
        let shard = self.shard(id);
        if self.owned.serves(shard) {
            Location::Local
        } else {
            self.routes.locate_remote(shard, self.node_id)
        }
    }

    fn missed(&self, _id: &String) {
        self.routes.missed();
    }
}
