//! A node publishes its claims, releases and refused appends through the `metrics` facade.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cluster::{ClusterConfig, ClusterNode, FencedEventStore};
use event_stores::testing::fresh_database;
use event_stores::{EventStore, NewEvent, StoreError, StoreLimits, StreamId};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

fn counter(snapshot: &[(String, DebugValue)], name: &str) -> u64 {
    snapshot
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| match v {
            DebugValue::Counter(c) => *c,
            _ => 0,
        })
        .sum()
}

#[test]
fn claims_releases_and_fenced_appends_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let db = fresh_database().await?;
            let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
            let pool = events.pool().clone();
            let config = |name: &str| ClusterConfig {
                shard_count: 16,
                heartbeat_interval: Duration::from_millis(200),
                ttl: Duration::from_secs(1),
                self_fence_margin: Duration::from_millis(300),
                ..ClusterConfig::new(format!("{name}:1"))
            };
            let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
            let b = ClusterNode::start(pool.clone(), config("b")).await.unwrap();
            for _ in 0..3 {
                a.tick_now().await;
                b.tick_now().await;
            }
            let moved = b.owned().len();
            let fenced = FencedEventStore::new(Arc::new(events), a.node_id(), a.owned().clone());
            let stream = (0..)
                .map(|i| StreamId::new("account", format!("x-{i}")).unwrap())
                .find(|s| {
                    b.owned()
                        .serves(b.shard_of(s.aggregate_type(), s.aggregate_id()))
                })
                .unwrap();
            let refused = fenced
                .append(&stream, 0, vec![NewEvent::new("Opened", 1, Vec::new())])
                .await;
            assert!(
                matches!(refused, Err(StoreError::Fenced { .. })),
                "{refused:?}"
            );
            drop(db);
            Some(moved)
        })
    });
    let Some(moved) = outcome else {
        return;
    };
    let snapshot: Vec<(String, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect();
    assert!(moved > 0);
    assert_eq!(
        counter(&snapshot, "cluster_shard_claims_total"),
        16 + moved as u64
    );
    assert_eq!(
        counter(&snapshot, "cluster_shard_releases_total"),
        moved as u64
    );
    assert_eq!(counter(&snapshot, "cluster_fenced_appends_total"), 1);
    assert!(snapshot.iter().any(|(n, _)| n == "cluster_shards_owned"));
    assert!(
        snapshot
            .iter()
            .any(|(n, _)| n == "cluster_heartbeat_seconds")
    );
}
