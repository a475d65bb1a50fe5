//! PostgreSQL positions come from the server's transaction counter: a database whose events
//! were copied from another cluster (a counter ahead of this server's) is refused at connect,
//! before an append could get a position below the stored ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use event_stores::testing::fresh_database;
use event_stores::{EventStore, NewEvent, PgEventStore, StoreError, StoreLimits, StreamId};

#[tokio::test]
async fn events_copied_from_a_cluster_with_a_later_transaction_counter_are_refused_at_connect() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let store = PgEventStore::connect(&db.config()).await.unwrap();
    let stream = StreamId::new("account", "a-1").unwrap();
    store
        .append(&stream, 0, vec![NewEvent::new("Opened", 1, vec![1])])
        .await
        .unwrap();
    // A store that is its own server's connects again.
    PgEventStore::connect(&db.config()).await.unwrap();

    // What a restore into a younger cluster looks like: positions from transactions this
    // server has not reached.
    sqlx::query(
        "UPDATE events
         SET position = (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000) << 16",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let refused = [
        PgEventStore::connect(&db.config()).await.err(),
        PgEventStore::from_pool(store.pool().clone(), StoreLimits::default())
            .await
            .err(),
    ];
    for refusal in refused {
        match refusal {
            Some(StoreError::Corrupt(message)) => {
                assert!(message.contains("backup"), "{message}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
