//! A command whose append the database fences (this node lost the aggregate's shard before it
//! noticed) stored nothing: the executor takes it on to the owner within its deadline, with the
//! same command id, instead of failing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::{
    EventStore, InMemorySnapshotStore, SnapshotStore, StoreLimits,
};
use aggregate_actors::{AggregateSettings, CommandId, CommandOptions, Executor};
use cluster::{ClusterConfig, ClusterNode, HttpTransport};
use common::Tally;
use event_stores::testing::fresh_database;

/// The node `a` misses a change of its shard's owner between two of its heartbeats (10 s
/// apart): the shard was taken and given up again (no owner, epoch + 2). Its next append for
/// an aggregate of that shard is refused by the database's fence; the command goes back to the
/// route, which makes the node look at the owners' table at once, stop its actors of the lost
/// shard, claim it anew and apply the command there, once, within the caller's deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_fenced_on_a_node_that_missed_a_takeover_is_applied_once_within_its_deadline() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let node = ClusterNode::start(
        pool.clone(),
        ClusterConfig {
            shard_count: 16,
            heartbeat_interval: Duration::from_secs(10),
            ttl: Duration::from_secs(30),
            self_fence_margin: Duration::from_secs(5),
            ..ClusterConfig::new("a.test:7000")
        },
    )
    .await
    .unwrap();
    let events: Arc<dyn EventStore> = Arc::new(events);
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(InMemorySnapshotStore::new());
    let executor: Executor = node
        .executor_builder(events, snapshots, Arc::new(HttpTransport::new().unwrap()))
        .register_remote::<Tally>(AggregateSettings::new())
        .build()
        .unwrap();
    node.attach(&executor).await;
    assert_eq!(node.owned().len(), 16);

    executor.execute::<Tally>("t-1", 1).await.unwrap();
    let shard = node.shard_of("tally", "t-1");
    let taken =
        sqlx::query("UPDATE shard_owners SET owner = NULL, epoch = epoch + 2 WHERE shard = $1")
            .bind(i32::try_from(shard).unwrap())
            .execute(&pool)
            .await
            .unwrap();
    assert_eq!(taken.rows_affected(), 1);
    assert!(node.owned().serves(shard), "the node has not noticed");

    let command_id = CommandId::new();
    let sent = Instant::now();
    let committed = executor
        .execute_with::<Tally>(
            "t-1",
            2,
            CommandOptions::new()
                .command_id(command_id)
                .timeout(Duration::from_secs(5)),
        )
        .await
        .expect("applied on the shard's new grant, within the deadline");
    let took = sent.elapsed();
    assert_eq!(committed.version, 2);
    assert!(!committed.duplicate);
    assert!(
        node.stats().fenced_appends >= 1,
        "the database's fence refused the first attempt: {:?}",
        node.stats()
    );
    let (stored, epoch): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE command_id = $1),
                (SELECT epoch FROM shard_owners WHERE shard = $2)",
    )
    .bind(command_id.as_uuid())
    .bind(i32::try_from(shard).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, 1, "stored exactly once");
    assert_eq!(
        node.owned().epoch(shard),
        Some(u64::try_from(epoch).unwrap()),
        "claimed anew"
    );
    eprintln!(
        "fenced command re-routed and applied in {took:?} ({} fenced appends)",
        node.stats().fenced_appends
    );
}
