//! Contract cases for appends of one event, the common case of a command: a backend may send
//! them by a path of their own (PostgreSQL checks the expected version through its primary key
//! there instead of reading the head), and every outcome must still be the general one.

use std::sync::Arc;

use uuid::Uuid;

use super::{assert_conflict, event, fresh_stream, read_whole};
use crate::{EventStore, StoreError};

/// One-event appends at every wrong expected version conflict with the stream's true head, from
/// behind, from ahead and on a new stream; nothing is stored; the right version appends.
pub async fn one_event_appends_conflict_from_behind_and_ahead_and_store_nothing(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("one");
    assert_conflict(
        store.append(&stream, 1, vec![event("x")]).await,
        &stream,
        1,
        0,
    );
    for version in 0..3 {
        store
            .append(&stream, version, vec![event(version.to_string())])
            .await
            .unwrap();
    }
    for stale in [0, 1, 2, 4, 7] {
        assert_conflict(
            store.append(&stream, stale, vec![event("x")]).await,
            &stream,
            stale,
            3,
        );
    }
    assert_eq!(read_whole(store.as_ref(), &stream).await.len(), 3);
    let receipt = store.append(&stream, 3, vec![event("3")]).await.unwrap();
    assert_eq!((receipt.first_version, receipt.last_version), (4, 4));
}

/// A one-event command appended again is refused as already applied at the stream's head, but
/// at a stale version the version check comes first, whichever of the stream's key and the event
/// id's key the backend meets first.
pub async fn a_one_event_command_appended_again_meets_the_version_check_first(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("again-one");
    let command = Uuid::now_v7();
    let once = || vec![event("c").for_command(&stream, command, 0)];
    store.append(&stream, 0, once()).await.unwrap();
    store
        .append(
            &stream,
            1,
            vec![event("d").for_command(&stream, Uuid::now_v7(), 0)],
        )
        .await
        .unwrap();
    // At 0 the next version (1) holds this very event; at 1 it holds another command's.
    assert_conflict(store.append(&stream, 0, once()).await, &stream, 0, 2);
    assert_conflict(store.append(&stream, 1, once()).await, &stream, 1, 2);
    match store.append(&stream, 2, once()).await {
        Err(StoreError::CommandAlreadyApplied { command_id, .. }) => {
            assert_eq!(command_id, command);
        }
        other => panic!("expected CommandAlreadyApplied, got {other:?}"),
    }
    assert_eq!(read_whole(store.as_ref(), &stream).await.len(), 2);
}
