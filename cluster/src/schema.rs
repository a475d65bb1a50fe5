//! The cluster's tables, and the settings every node must share.

use sqlx::PgPool;

use crate::error::{ClusterError, db};

/// Table recording which of this crate's migrations ran (its own, so it never collides with the
/// event stores' or an application's).
pub const MIGRATIONS_TABLE: &str = "_cluster_migrations";

/// Creates the cluster tables (and the event stores' tables, which hold `shard_owners`), records
/// the shard count or checks it against the recorded one, and makes sure every shard has an
/// ownership row. Idempotent; safe from several nodes at once.
pub async fn prepare(pool: &PgPool, shard_count: u32) -> Result<(), ClusterError> {
    event_stores::postgres::migrate(pool).await?;
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
        .run(pool)
        .await
        .map_err(|e| ClusterError::Settings(format!("running the cluster migrations: {e}")))?;

    sqlx::query(
        "INSERT INTO cluster_settings (key, value) VALUES ('shard_count', $1)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(shard_count.to_string())
    .execute(pool)
    .await
    .map_err(|e| db("recording the shard count", e))?;
    let recorded: String =
        sqlx::query_scalar("SELECT value FROM cluster_settings WHERE key = 'shard_count'")
            .fetch_one(pool)
            .await
            .map_err(|e| db("reading the shard count", e))?;
    if recorded != shard_count.to_string() {
        return Err(ClusterError::Settings(format!(
            "this node uses {shard_count} shards, the cluster was formed with {recorded}"
        )));
    }
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
