//! The cluster's tables, and the settings every node must share.

use sqlx::PgPool;

use crate::config::ClusterConfig;
use crate::error::{ClusterError, db};

/// Table recording which of this crate's migrations ran (its own, so it never collides with the
/// event stores' or an application's).
pub const MIGRATIONS_TABLE: &str = "_cluster_migrations";

/// Creates the cluster tables (and the event stores' tables, which hold `shard_owners`), records
/// the settings every node must share (the shard count and the TTL) or checks them against the
/// recorded ones, and makes sure every shard has an ownership row. Idempotent; safe from
/// several nodes at once.
///
/// Why the TTL: a node serves until its own lease, `ttl - self_fence_margin` after its last
/// heartbeat, runs out, and the others take its shards once its heartbeat is `ttl` old. A node
/// with a longer TTL than another's would go on serving shards the other has already taken.
/// To change either setting, stop every node and update (or delete) its `cluster_settings` row.
pub async fn prepare(pool: &PgPool, config: &ClusterConfig) -> Result<(), ClusterError> {
    event_stores::postgres::migrate(pool).await?;
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
        .run(pool)
        .await
        .map_err(|e| ClusterError::Settings(format!("running the cluster migrations: {e}")))?;

    let shard_count = config.shard_count;
    shared_setting(pool, "shard_count", &shard_count.to_string(), "shards").await?;
    let ttl_ms = config.ttl.as_millis().to_string();
    shared_setting(pool, "ttl_ms", &ttl_ms, "ms of heartbeat TTL").await?;
    let last = i32::try_from(shard_count)
        .map_err(|_| ClusterError::InvalidConfig(format!("{shard_count} shards is too many")))?
        - 1;
    sqlx::query(
        "INSERT INTO shard_owners (shard) SELECT generate_series(0, $1::int)
         ON CONFLICT (shard) DO NOTHING",
    )
    .bind(last)
    .execute(pool)
    .await
    .map_err(|e| db("creating the shard rows", e))?;
    Ok(())
}

/// Records `value` as the cluster's `key` unless one is recorded, then checks that they agree.
async fn shared_setting(
    pool: &PgPool,
    key: &str,
    value: &str,
    unit: &str,
) -> Result<(), ClusterError> {
    sqlx::query(
        "INSERT INTO cluster_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(value)
    .execute(pool)
    .await
    .map_err(|e| db("recording a cluster setting", e))?;
    let recorded: String = sqlx::query_scalar("SELECT value FROM cluster_settings WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .map_err(|e| db("reading a cluster setting", e))?;
    if recorded != value {
        return Err(ClusterError::Settings(format!(
            "this node uses {value} {unit}, the cluster was formed with {recorded} \
             (cluster_settings.{key}; every node must use the same)"
        )));
    }
    Ok(())
}
