//! Shard ownership rows (`shard_owners`): read the map, claim shards from nobody or from dead
//! nodes, release shards. Every change of owner increments the shard's epoch, which is the
//! fencing token appends carry.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ClusterError;
use crate::membership::interval;
use crate::round_trip::{connection, settle};

/// One shard's ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// The shard.
    pub shard: u32,
    /// Its owner, if any.
    pub owner: Option<Uuid>,
    /// The epoch of the current ownership.
    pub epoch: u64,
}

/// Every shard's ownership, by shard; answered `within`, or an error.
pub async fn read_all(pool: &PgPool, within: Duration) -> Result<Vec<Ownership>, ClusterError> {
    const WHAT: &str = "reading shard owners";
    let mut conn = connection(pool, within, WHAT).await?;
    let read = sqlx::query_as::<_, (i32, Option<Uuid>, i64)>(
        "SELECT shard, owner, epoch FROM shard_owners ORDER BY shard",
    )
    .fetch_all(&mut *conn);
    let answer = tokio::time::timeout(within, read).await;
    let rows = settle(&mut conn, answer, WHAT, within)?;
    Ok(rows.into_iter().filter_map(ownership).collect())
}

/// Claims `shards` for `node` where they have no owner or their owner is not a live member
/// (heartbeat older than `ttl` by the database clock, or left). Returns the shards won with
/// their new epochs; a shard whose owner is alive is left alone, and so is one whose row
/// another session holds locked (see below). Answered `within`, or an error (after which the
/// claim may have been applied: the owners' table says).
pub async fn claim(
    pool: &PgPool,
    node: Uuid,
    shards: &[u32],
    ttl: Duration,
    within: Duration,
) -> Result<Vec<Ownership>, ClusterError> {
    const WHAT: &str = "claiming shards";
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let shards: Vec<i32> = shards
        .iter()
        .filter_map(|s| i32::try_from(*s).ok())
        .collect();
    let mut conn = connection(pool, within, WHAT).await?;
    // A shard row another session holds locked is skipped, not waited for: a node paused in
    // the middle of a fenced transaction holds its shard's row share-locked until the server
    // ends that session, and waiting for it would hold up every other claim and this node's
    // heartbeats with them. The next tick tries the skipped shard again.
    let update = sqlx::query_as::<_, (i32, Option<Uuid>, i64)>(
        "WITH free AS (
             SELECT o.shard FROM shard_owners o
             WHERE o.shard = ANY($2::int[])
               AND (o.owner IS DISTINCT FROM $1)
               AND (o.owner IS NULL OR NOT EXISTS (
                    SELECT 1 FROM cluster_members m
                    WHERE m.node_id = o.owner AND m.left_at IS NULL
                      AND m.heartbeat_at > now() - $3::interval))
             FOR UPDATE SKIP LOCKED
         )
         UPDATE shard_owners o SET owner = $1, epoch = o.epoch + 1, changed_at = now()
         FROM free WHERE o.shard = free.shard
         RETURNING o.shard, o.owner, o.epoch",
    )
    .bind(node)
    .bind(&shards)
    .bind(interval(ttl))
    .fetch_all(&mut *conn);
    let answer = tokio::time::timeout(within, update).await;
    let rows = settle(&mut conn, answer, WHAT, within)?;
    Ok(rows.into_iter().filter_map(ownership).collect())
}

/// Gives up `shard` if `node` still owns it at `epoch`; true when it did. The epoch is
/// incremented, so any append still carrying the old fence is refused. Answered `within`, or
/// an error (after which the release may have been applied: the owners' table says).
pub async fn release(
    pool: &PgPool,
    node: Uuid,
    shard: u32,
    epoch: u64,
    within: Duration,
) -> Result<bool, ClusterError> {
    const WHAT: &str = "releasing a shard";
    let (Ok(shard), Ok(epoch)) = (i32::try_from(shard), i64::try_from(epoch)) else {
        return Ok(false);
    };
    let mut conn = connection(pool, within, WHAT).await?;
    let update = sqlx::query(
        "UPDATE shard_owners SET owner = NULL, epoch = epoch + 1, changed_at = now()
         WHERE shard = $1 AND owner = $2 AND epoch = $3",
    )
    .bind(shard)
    .bind(node)
    .bind(epoch)
    .execute(&mut *conn);
    let answer = tokio::time::timeout(within, update).await;
    let released = settle(&mut conn, answer, WHAT, within)?;
    Ok(released.rows_affected() == 1)
}

fn ownership((shard, owner, epoch): (i32, Option<Uuid>, i64)) -> Option<Ownership> {
    Some(Ownership {
        shard: u32::try_from(shard).ok()?,
        owner,
        epoch: u64::try_from(epoch).ok()?,
    })
}
