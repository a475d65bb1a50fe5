//! Scenario 8: the cluster (PostgreSQL only).
//!
//! Two measurements, each against a baseline measured alternately in the same run:
//!
//! - **Forwarding overhead.** Two cluster nodes (each its own [`ClusterNode`], executor built
//!   with [`ClusterNode::executor_builder`], [`HttpTransport`] and [`::cluster::serve`] on a
//!   loopback port) on one database. Once ownership is stable, ids owned by node A are picked;
//!   rounds alternate between sending their deposits to A (the owner: the baseline) and to B
//!   (which forwards them to A over HTTP/2). Same ids, callers and command on both sides.
//! - **3 nodes vs 1 node.** The same workload (K aggregates, ids drawn at random, a fixed number
//!   of callers spread evenly over the entry nodes) on a 1-node cluster and on a 3-node
//!   cluster, each in its own database, alternating rounds. A plain executor without a cluster
//!   (unfenced appends, no placement) runs alongside as a diagnostic.
//!
//! All nodes run in this process, on the same tokio runtime, against the same PostgreSQL
//! server: on a small machine this prices the cluster machinery, not scale-out.

mod forwarding;
mod nodes;
mod report;
mod scaling;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::cluster::{
    ClusterConfig, ClusterNode, ClusterStats, HttpTransport, Route, TransportServer, TransportStats,
};
use aggregate_actors::{Aggregate, Executor};
use event_stores::{PgConfig, PgEventStore, PgSnapshotStore};
use tokio::net::TcpListener;

use crate::BoxError;
use crate::figures::{fmt_count, fmt_duration, fmt_rate, fmt_ratio, ratio};
use crate::ledger::{Ledger, LedgerCommand};
use crate::measure::{Measurement, Op, op, run_alternating};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;
use crate::scenarios::executor::{activate_all, command_path_settings, ids};

use forwarding::*;
use nodes::*;
use report::*;
use scaling::*;

/// Ids owned by node A that the forwarding runs send commands to.
pub(super) const FORWARD_IDS: usize = 16;
/// Caller counts of the forwarding runs (caller `c` sends to id `c`).
pub(super) const FORWARD_CALLERS: [usize; 2] = [1, FORWARD_IDS];
/// Callers of the 3-vs-1 workload, spread evenly over the entry nodes (divisible by 3).
pub(super) const WORKLOAD_CALLERS: usize = 24;
/// Database connections per node (forwarding runs).
pub(super) const FORWARD_CONNECTIONS: u32 = 24;
/// Database connections per node or executor (3-vs-1 runs): more than the callers, so the
/// pool never limits a side.
pub(super) const WORKLOAD_CONNECTIONS: u32 = 32;
/// Longest a cluster may take to settle.
pub(super) const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Aggregates of the 3-vs-1 workload.
pub(super) fn workload_aggregates(ctx: &Ctx) -> usize {
    if ctx.quick { 256 } else { 1_024 }
}

/// Rounds of alternation.
pub(super) fn rounds(ctx: &Ctx) -> usize {
    if ctx.quick { 3 } else { 5 }
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let title = super::ALL[7].title;
    let Some(pg) = &ctx.pg else {
        return Ok(Section::skipped(
            title,
            "no PostgreSQL (no database URL, no binaries)",
        ));
    };
    let forward_url = pg.create_database("cluster_fwd").await?;
    let one_url = pg.create_database("cluster_one").await?;
    let three_url = pg.create_database("cluster_three").await?;
    let plain_url = pg.create_database("cluster_plain").await?;
    let fwd = forwarding(ctx, &forward_url).await?;
    let scale = scaling(ctx, [&one_url, &three_url, &plain_url]).await?;
    Ok(section(ctx, title, &fwd, &scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_spread_over_the_aggregates() {
        let mut hits = [0u32; 8];
        for caller in 0..4 {
            for i in 0..800 {
                hits[(mix(caller, i) % 8) as usize] += 1;
            }
        }
        assert!(hits.iter().all(|&h| (300..500).contains(&h)), "{hits:?}");
    }
}
