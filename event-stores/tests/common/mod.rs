//! Helpers shared by the PostgreSQL test files of this crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Makes `owner` the owner of `shard` at `epoch` (what a cluster's claim writes).
pub async fn set_shard_owner(pool: &sqlx::PgPool, shard: i32, owner: uuid::Uuid, epoch: i64) {
    sqlx::query(
        "INSERT INTO shard_owners (shard, owner, epoch) VALUES ($1, $2, $3)
         ON CONFLICT (shard) DO UPDATE SET owner = $2, epoch = $3, changed_at = now()",
    )
    .bind(shard)
    .bind(owner)
    .bind(epoch)
    .execute(pool)
    .await
    .unwrap();
}
