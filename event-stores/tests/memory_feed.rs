//! The in-memory store's feed under concurrent appends (no store-wide lock): a reader following
//! `read_all` sees every position exactly once, in order (and, when its read races a fill, never
//! part of an append: slots are filled last first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use event_stores::{EventStore, InMemoryEventStore, NewEvent, StreamId};

const WRITERS: u64 = 8;
const APPENDS: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_read_all_during_concurrent_appends_sees_every_position_once_in_order() {
    let store = Arc::new(InMemoryEventStore::new());
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        tokio::spawn(async move {
            let (mut after, mut seen) = (0u64, Vec::new());
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = store.read_all(after, 50).await.unwrap();
                if let Some(last) = page.last() {
                    // Appends of n events are typed "i/n": a page never ends inside one.
                    let (i, n) = last.event_type.split_once('/').unwrap();
                    let (i, n): (u64, u64) = (i.parse().unwrap(), n.parse().unwrap());
                    assert!(
                        page.len() == 50 || i + 1 == n,
                        "a page ends inside an append"
                    );
                    after = last.position;
                    seen.extend(page.iter().map(|e| e.position));
                } else if finished {
                    return seen;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let stream = StreamId::new("feed", format!("w{w}")).unwrap();
                let mut version = 0;
                for a in 0..APPENDS {
                    let n = a % 3 + 1;
                    let events = (0..n)
                        .map(|i| NewEvent::new(format!("{i}/{n}"), 1, vec![0x90]))
                        .collect();
                    version = store
                        .append(&stream, version, events)
                        .await
                        .unwrap()
                        .last_version;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let total = WRITERS * (0..APPENDS).map(|a| a % 3 + 1).sum::<u64>();
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "every position once, in order"
    );
    assert_eq!(store.count_after(0).await.unwrap(), total);
}
