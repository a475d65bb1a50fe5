//! The store contract, run against the in-memory backends.

#![allow(clippy::unwrap_used)]

use event_stores::contract::{self, Fixture};
use event_stores::{InMemoryEventStore, InMemorySnapshotStore};

event_stores::store_contract! {
    make = async {
        let limits = contract::limits();
        Some(Fixture::new(
            InMemoryEventStore::with_limits(limits),
            InMemorySnapshotStore::with_limits(limits),
            limits,
        ))
    }
}

/// The in-memory store serves one process and has no shard owners: a fenced append is refused
/// with a typed error and stores nothing.
#[tokio::test]
async fn fenced_appends_are_unsupported_in_memory_and_store_nothing() {
    use event_stores::{EventStore, Fence, InMemoryEventStore, StoreError};
    let store = InMemoryEventStore::new();
    let stream = event_stores::contract::fresh_stream("fenced");
    let fence = Fence {
        shard: 1,
        owner: uuid::Uuid::now_v7(),
        epoch: 1,
    };
    let refused = store
        .append_fenced(
            &stream,
            0,
            event_stores::contract::numbered_events(0, 1),
            &fence,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Unsupported(_))),
        "{refused:?}"
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
}
