//! Membership in PostgreSQL: a row per node process, alive while its heartbeat (on the database
//! clock) is younger than the TTL.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ClusterError;
use crate::round_trip::{connection, settle};

/// A live member as the database sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's id (fresh for every process start).
    pub node_id: Uuid,
    /// Where other nodes reach it.
    pub address: String,
}

/// Inserts this node's row (a fresh node id) with a heartbeat of now, answered `within`.
pub async fn join(
    pool: &PgPool,
    node_id: Uuid,
    address: &str,
    within: Duration,
) -> Result<(), ClusterError> {
    const WHAT: &str = "joining the cluster";
    let mut conn = connection(pool, within, WHAT).await?;
    let insert = sqlx::query("INSERT INTO cluster_members (node_id, address) VALUES ($1, $2)")
        .bind(node_id)
        .bind(address)
        .execute(&mut *conn);
    let answer = tokio::time::timeout(within, insert).await;
    settle(&mut conn, answer, WHAT, within)?;
    Ok(())
}

/// Renews this node's heartbeat and returns the live members (this one included when its
/// heartbeat succeeded), in one round trip. `None` when this node's row says it left (or was
/// removed): it must not serve anything. Answered `within`, or an error.
pub async fn heartbeat(
    pool: &PgPool,
    node_id: Uuid,
    ttl: Duration,
    within: Duration,
) -> Result<Option<Vec<Member>>, ClusterError> {
    const WHAT: &str = "heartbeat";
    let mut conn = connection(pool, within, WHAT).await?;
    let beat = sqlx::query_as::<_, (Uuid, String, bool)>(
        "WITH beat AS (
             UPDATE cluster_members SET heartbeat_at = now()
             WHERE node_id = $1 AND left_at IS NULL
             RETURNING node_id
         )
         SELECT node_id, address, false FROM cluster_members
         WHERE left_at IS NULL AND heartbeat_at > now() - $2::interval AND node_id <> $1
         UNION ALL
         SELECT m.node_id, m.address, true FROM cluster_members m JOIN beat USING (node_id)",
    )
    .bind(node_id)
    .bind(interval(ttl))
    .fetch_all(&mut *conn);
    let answer = tokio::time::timeout(within, beat).await;
    let rows = settle(&mut conn, answer, WHAT, within)?;
    if !rows.iter().any(|(_, _, me)| *me) {
        return Ok(None);
    }
    let mut members: Vec<Member> = rows
        .into_iter()
        .map(|(node_id, address, _)| Member { node_id, address })
        .collect();
    members.sort_by_key(|m| m.node_id);
    Ok(Some(members))
}

/// Marks this node as gone, so others take its shards at once instead of after the TTL;
/// answered `within`, or an error.
pub async fn leave(pool: &PgPool, node_id: Uuid, within: Duration) -> Result<(), ClusterError> {
    const WHAT: &str = "leaving the cluster";
    let mut conn = connection(pool, within, WHAT).await?;
    let update = sqlx::query("UPDATE cluster_members SET left_at = now() WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *conn);
    let answer = tokio::time::timeout(within, update).await;
    settle(&mut conn, answer, WHAT, within)?;
    Ok(())
}

/// A Rust duration as a PostgreSQL interval literal (microseconds).
pub(crate) fn interval(d: Duration) -> String {
    format!("{} microseconds", d.as_micros())
}
