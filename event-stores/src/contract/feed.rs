//! Contract cases for the store-wide feed beyond `read_all` itself.

use std::sync::Arc;

use super::{event, fresh_stream};
use crate::EventStore;

/// `count_after` counts what `read_all` would return after a position: between what a read
/// just before and one just after return (other writers may append meanwhile), and at least this
/// case's own events after that position.
pub async fn count_after_counts_what_read_all_returns_after_a_position(store: Arc<dyn EventStore>) {
    let streams = [fresh_stream("feed-a"), fresh_stream("feed-b")];
    let mut positions = Vec::new();
    for round in 0..4u64 {
        for stream in &streams {
            let events = (0..=round % 3)
                .map(|i| event(format!("{round}-{i}")))
                .collect();
            let version = store.stream_version(stream).await.unwrap();
            let receipt = store.append(stream, version, events).await.unwrap();
            positions.push((receipt.last_position, round % 3 + 1));
        }
    }
    // The feed shows an event once older transactions have ended (others may be running on a
    // shared server): wait until this case's last event is readable.
    let last_mine = positions[positions.len() - 1].0;
    let mut visible = false;
    for _ in 0..500 {
        if !store.read_all(last_mine - 1, 1).await.unwrap().is_empty() {
            visible = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(visible, "the last event appended never became readable");
    let total_mine: u64 = positions.iter().map(|(_, n)| n).sum();
    let first_mine = positions[0].0 - positions[0].1 + 1;
    for (at, mine_after) in [
        (first_mine - 1, total_mine),
        (positions[3].0, positions[4..].iter().map(|(_, n)| n).sum()),
        (positions[positions.len() - 1].0, 0),
    ] {
        let before = store.read_all(at, usize::MAX).await.unwrap().len() as u64;
        let counted = store.count_after(at).await.unwrap();
        let after = store.read_all(at, usize::MAX).await.unwrap().len() as u64;
        assert!(
            before <= counted && counted <= after,
            "count_after({at}) = {counted}, read_all saw {before} then {after}"
        );
        assert!(
            counted >= mine_after,
            "count_after({at}) = {counted} < {mine_after}"
        );
    }
}

/// `stream_ids` pages through the ids of one aggregate type in ascending byte order (whatever
/// the database's collation: upper case before lower, `-` before digits before `_`): every
/// stream with events once, none of another type, none of a stream whose only append failed.
pub async fn stream_ids_page_through_one_type_in_id_order(store: Arc<dyn EventStore>) {
    // A type of this case's own, so streams of other cases on a shared store do not show.
    let aggregate_type = format!("ids-{}", uuid::Uuid::now_v7().simple());
    let mut expected: Vec<String> = (0..25).map(|i| format!("id-{i:03}")).collect();
    // Ordered differently by a linguistic collation (which puts "a-1" before "B-1", and
    // "id_1" beside "id-1").
    expected.extend(["B-1", "a-1", "a-B", "aB", "ab", "id_1", "ID-1"].map(String::from));
    for id in expected.iter().rev() {
        let stream = crate::StreamId::new(&aggregate_type, id).unwrap();
        store.append(&stream, 0, vec![event(id)]).await.unwrap();
    }
    let other = crate::StreamId::new(format!("{aggregate_type}-other"), "id-000").unwrap();
    store.append(&other, 0, vec![event("x")]).await.unwrap();
    let failed = crate::StreamId::new(&aggregate_type, "id-999").unwrap();
    assert!(store.append(&failed, 3, vec![event("x")]).await.is_err());
    expected.sort();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .stream_ids(&aggregate_type, after.as_deref(), 7)
            .await
            .unwrap();
        assert!(page.len() <= 7, "a page holds at most the limit");
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        seen.extend(page);
    }
    assert_eq!(seen, expected);
    assert_eq!(
        store
            .stream_ids(&aggregate_type, Some("id-024"), 10)
            .await
            .unwrap(),
        ["id_1"],
    );
}
