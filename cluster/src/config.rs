//! [`ClusterConfig`]: how a node takes part in the cluster, checked before it joins.

use std::time::Duration;

use crate::error::ClusterError;
use crate::shard::DEFAULT_SHARD_COUNT;

/// How a node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The address other nodes reach this one at (for forwarding), e.g. `127.0.0.1:7001`.
    pub address: String,
    /// Number of shards; every node of a cluster must use the same (default 1 024).
    pub shard_count: u32,
    /// How often the node heartbeats and rebalances (default 1 s).
    pub heartbeat_interval: Duration,
    /// A node whose last heartbeat is older than this (database clock) is dead (default 3 s).
    pub ttl: Duration,
    /// A node stops serving when it has not heartbeat for `ttl` minus this (default 500 ms).
    pub self_fence_margin: Duration,
    /// Most shards released per tick (default 64), so a join moves load gradually.
    pub max_releases_per_tick: usize,
}

impl ClusterConfig {
    /// Defaults as documented on each field, advertising `address`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            shard_count: DEFAULT_SHARD_COUNT,
            heartbeat_interval: Duration::from_secs(1),
            ttl: Duration::from_secs(3),
            self_fence_margin: Duration::from_millis(500),
            max_releases_per_tick: 64,
        }
    }

    /// How long after sending a heartbeat that succeeded this node may serve: `ttl` minus
    /// `self_fence_margin`. Also the bound on a release's, a join's and a leave's statements:
    /// an answer later than that comes after the lease it would act on.
    pub(crate) fn lease(&self) -> Duration {
        self.ttl.saturating_sub(self.self_fence_margin)
    }

    pub(crate) fn check(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::InvalidConfig(m));
        if self.shard_count == 0 || i32::try_from(self.shard_count).is_err() {
            return bad(format!("shard_count {} is out of range", self.shard_count));
        }
        if self.heartbeat_interval.is_zero() || self.ttl < self.heartbeat_interval * 2 {
            return bad(format!(
                "ttl {:?} must be at least twice the heartbeat interval {:?}",
                self.ttl, self.heartbeat_interval
            ));
        }
        if self.self_fence_margin >= self.ttl - self.heartbeat_interval {
            return bad(format!(
                "self_fence_margin {:?} leaves no time to heartbeat within ttl {:?}",
                self.self_fence_margin, self.ttl
            ));
        }
        Ok(())
    }
}
