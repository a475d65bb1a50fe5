//! Contract cases for many streams appended to at once: whatever a backend does to share work
//! between concurrent appends (PostgreSQL's group commit sends them in one statement), each
//! append keeps its own outcome.

use std::collections::HashSet;
use std::sync::Arc;

use uuid::Uuid;

use super::{assert_conflict, fresh_stream, invalid, numbered_events, read_all_of, read_whole};
use crate::{EventStore, InvalidInput, NewEvent, StoreError, StoreResult, StreamId};

/// Streams per round, and rounds: enough appends in flight at once for a backend to share them.
const STREAMS: usize = 48;
const ROUNDS: u64 = 4;

/// Appends every `(stream, expected, events)` at once and returns each outcome, in order.
async fn append_all(
    store: &Arc<dyn EventStore>,
    appends: Vec<(StreamId, u64, Vec<NewEvent>)>,
) -> Vec<StoreResult<u64>> {
    let tasks: Vec<_> = appends
        .into_iter()
        .map(|(stream, expected, events)| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                store
                    .append(&stream, expected, events)
                    .await
                    .map(|receipt| receipt.last_version)
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// Many streams appended to at once, round after round: an append whose expected version is
/// behind or ahead gets its own [`StoreError::VersionConflict`] with the stream's actual
/// version, and every other append of the same moment is stored, with 1–3 events each,
/// contiguous versions and positions that `read_all` returns in order.
pub async fn concurrent_appends_to_many_streams_each_get_their_own_outcome(
    store: Arc<dyn EventStore>,
) {
    let streams: Vec<StreamId> = (0..STREAMS).map(|_| fresh_stream("many")).collect();
    let mut heads = vec![0u64; STREAMS];
    let mut stored = 0;
    for round in 0..ROUNDS {
        let plan: Vec<(u64, u64)> = (0..STREAMS)
            .map(|i| {
                let count = 1 + (i as u64 + round) % 3;
                let expected = match (i as u64 + round) % 7 {
                    // Behind: only once the stream has events.
                    1 if heads[i] > 0 => heads[i] - 1,
                    2 => heads[i] + 2,
                    _ => heads[i],
                };
                (expected, count)
            })
            .collect();
        let appends = plan
            .iter()
            .zip(&streams)
            .zip(&heads)
            .map(|((&(expected, count), stream), &head)| {
                (stream.clone(), expected, numbered_events(head, count))
            })
            .collect();
        let outcomes = append_all(&store, appends).await;
        for (i, (outcome, &(expected, count))) in outcomes.into_iter().zip(&plan).enumerate() {
            if expected == heads[i] {
                assert_eq!(
                    outcome.unwrap(),
                    heads[i] + count,
                    "round {round}, stream {i}: stored at the next versions"
                );
                heads[i] += count;
                stored += count as usize;
            } else {
                assert_conflict(outcome, &streams[i], expected, heads[i]);
            }
        }
    }
    for (stream, &head) in streams.iter().zip(&heads) {
        let read = read_whole(store.as_ref(), stream).await;
        let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=head).collect::<Vec<_>>(), "{stream}");
        let tags: Vec<Vec<u8>> = read.iter().map(|e| e.payload.to_vec()).collect();
        let expected: Vec<Vec<u8>> = (0..head).map(|v| v.to_le_bytes().to_vec()).collect();
        assert_eq!(
            tags, expected,
            "{stream}: each event where its append put it"
        );
    }
    let mine: HashSet<StreamId> = streams.iter().cloned().collect();
    let all = read_all_of(store.as_ref(), &mine, 1_000, stored).await;
    assert_eq!(all.len(), stored, "read_all sees every stored event once");
    for pair in all.windows(2) {
        if pair[0].stream == pair[1].stream {
            assert!(
                pair[0].version < pair[1].version,
                "read_all keeps each stream's order"
            );
        }
    }
}

/// A retried command among appends to other streams at the same moment is refused alone as
/// [`StoreError::CommandAlreadyApplied`]; the other appends are stored, and the stream of the
/// retried command keeps exactly its first copy.
pub async fn a_command_already_applied_among_concurrent_appends_is_refused_alone(
    store: Arc<dyn EventStore>,
) {
    let retried = fresh_stream("retried");
    let command = Uuid::now_v7();
    let first_copy = vec![crate::contract::event(b"once").for_command(&retried, command, 0)];
    store.append(&retried, 0, first_copy.clone()).await.unwrap();
    let others: Vec<StreamId> = (0..STREAMS).map(|_| fresh_stream("beside")).collect();

    let mut appends = vec![(retried.clone(), 1, first_copy)];
    appends.extend(others.iter().map(|s| (s.clone(), 0, numbered_events(0, 2))));
    let mut outcomes = append_all(&store, appends).await.into_iter();
    match outcomes.next().unwrap() {
        Err(StoreError::CommandAlreadyApplied { stream, command_id }) => {
            assert_eq!((stream, command_id), (retried.clone(), command));
        }
        other => panic!("expected CommandAlreadyApplied, got {other:?}"),
    }
    for (stream, outcome) in others.iter().zip(outcomes) {
        assert_eq!(outcome.unwrap(), 2, "{stream} is stored beside the retry");
        assert_eq!(read_whole(store.as_ref(), stream).await.len(), 2);
    }
    assert_eq!(store.stream_version(&retried).await.unwrap(), 1);
}

/// Two appends to two streams carrying the same event id at the same moment, among others:
/// exactly one of the two is stored, the other is refused with
/// [`InvalidInput::DuplicateEventId`] and stores nothing, and the others are all stored.
pub async fn an_event_id_in_two_concurrent_appends_is_stored_once(store: Arc<dyn EventStore>) {
    let (first, second) = (fresh_stream("twin"), fresh_stream("twin"));
    let mut twins = numbered_events(0, 2);
    let mut copy = numbered_events(10, 2);
    copy[1].event_id = twins[1].event_id;
    twins[0].event_id = Uuid::now_v7();
    let others: Vec<StreamId> = (0..STREAMS).map(|_| fresh_stream("beside")).collect();

    let mut appends = vec![(first.clone(), 0, twins), (second.clone(), 0, copy)];
    appends.extend(others.iter().map(|s| (s.clone(), 0, numbered_events(0, 1))));
    let mut outcomes = append_all(&store, appends).await.into_iter();
    let (a, b) = (outcomes.next().unwrap(), outcomes.next().unwrap());
    let (won, lost) = match (&a, &b) {
        (Ok(_), Err(_)) => (&first, (&second, b)),
        (Err(_), Ok(_)) => (&second, (&first, a)),
        _ => panic!("exactly one of the twins is stored: {a:?}, {b:?}"),
    };
    assert!(matches!(invalid(lost.1), InvalidInput::DuplicateEventId(_)));
    assert_eq!(store.stream_version(won).await.unwrap(), 2);
    assert_eq!(store.stream_version(lost.0).await.unwrap(), 0);
    for (stream, outcome) in others.iter().zip(outcomes) {
        assert_eq!(outcome.unwrap(), 1, "{stream} is stored beside the twins");
    }
}
