//! The route table: which node owns each shard and where each live node is reached, as of the
//! last tick. Read on every call for a key not served here, so it is a plain `RwLock` that is
//! written once a tick.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use actor_runtime::Location;
use uuid::Uuid;

use crate::membership::Member;
use crate::ownership::Ownership;

/// Owners by shard and addresses by node.
#[derive(Debug, Default)]
pub struct RouteTable {
    table: RwLock<Table>,
    /// A call missed its route since the last update: the node ticks early.
    stale: AtomicBool,
    refresh: Notify,
}

#[derive(Debug, Default)]
struct Table {
    owners: Vec<Option<Uuid>>,
    addresses: HashMap<Uuid, String>,
}

impl RouteTable {
    /// Replaces the table with what a tick read.
    pub(crate) fn update(&self, shard_count: u32, members: &[Member], ownership: &[Ownership]) {
        let mut owners = vec![None; shard_count as usize];
        for row in ownership {
            if let Some(slot) = owners.get_mut(row.shard as usize) {
                *slot = row.owner;
            }
        }
        let addresses = members
            .iter()
            .map(|m| (m.node_id, m.address.clone()))
            .collect();
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        *table = Table { owners, addresses };
        self.stale.store(false, Ordering::Release);
    }

    /// A call found no owner, or its owner did not answer: asks the node for an early tick
    /// (once per update, however many calls miss).
    pub fn missed(&self) {
        if !self.stale.swap(true, Ordering::AcqRel) {
            self.refresh.notify_one();
        }
    }

    /// Resolves once a call has missed its route since the last update.
    pub(crate) async fn refresh_wanted(&self) {
        self.refresh.notified().await;
    }

    /// The owner of `shard` and its address, if it has a live owner other than `me`.
    pub fn remote_owner(&self, shard: u32, me: Uuid) -> Option<(Uuid, String)> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let owner = table.owners.get(shard as usize).copied().flatten()?;
        if owner == me {
            return None;
        }
        table
            .addresses
            .get(&owner)
            .map(|address| (owner, address.clone()))
    }

    /// Where `shard` is served, for a node `me` that does not serve it itself.
    pub fn locate_remote(&self, shard: u32, me: Uuid) -> Location {
        match self.remote_owner(shard, me) {
            Some((_, address)) => Location::Remote(address),
            None => Location::Unknown,
        }
    }
}
