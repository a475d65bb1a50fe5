//! Contract cases for the metadata stored with events: correlation, causation, trace context.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::{event, fresh_stream};
use crate::{EventMetadata, EventStore, NewEvent, RecordedEvent, StreamId, TraceParent};

fn traced(payload: &str, trace: TraceParent) -> NewEvent {
    event(payload).with_metadata(EventMetadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        trace_parent: Some(trace),
    })
}

/// A `traceparent` comes back as appended from a one-event append, a many-event append and
/// appends racing on many streams at once (which a backend may batch), through `read_stream`,
/// `read_command` and `read_all`; an event appended without one reads back without one.
pub async fn trace_context_survives_every_append_path_and_every_read(store: Arc<dyn EventStore>) {
    let trace = TraceParent::generate();
    let single = fresh_stream("trace-one");
    let many = fresh_stream("trace-many");
    let command = Uuid::now_v7();
    let mut sent: HashMap<Uuid, EventMetadata> = HashMap::new();

    let one = traced("one", trace.child());
    sent.insert(one.event_id, one.metadata);
    store.append(&single, 0, vec![one]).await.unwrap();
    let plain = event("plain");
    sent.insert(plain.event_id, plain.metadata);
    store.append(&single, 1, vec![plain]).await.unwrap();

    let batch: Vec<NewEvent> = (0..3)
        .map(|i| {
            let mut e = traced(&format!("many-{i}"), trace.child());
            e.command_id = Some(command);
            e
        })
        .collect();
    sent.extend(batch.iter().map(|e| (e.event_id, e.metadata)));
    store.append(&many, 0, batch).await.unwrap();

    let racing: Vec<(StreamId, NewEvent)> = (0..16)
        .map(|i| {
            (
                fresh_stream("trace-race"),
                traced(&format!("race-{i}"), trace.child()),
            )
        })
        .collect();
    sent.extend(racing.iter().map(|(_, e)| (e.event_id, e.metadata)));
    let appends = racing.iter().map(|(stream, e)| {
        let store = Arc::clone(&store);
        let (stream, e) = (stream.clone(), e.clone());
        tokio::spawn(async move { store.append(&stream, 0, vec![e]).await })
    });
    for append in futures::future::join_all(appends).await {
        append.unwrap().unwrap();
    }

    let mut read: Vec<RecordedEvent> = Vec::new();
    for stream in [&single, &many] {
        read.extend(
            store
                .read_stream(stream, crate::ReadQuery::all())
                .await
                .unwrap(),
        );
    }
    for (stream, _) in &racing {
        read.extend(
            store
                .read_stream(stream, crate::ReadQuery::all())
                .await
                .unwrap(),
        );
    }
    assert_eq!(read.len(), sent.len());
    for got in &read {
        assert_eq!(Some(&got.metadata), sent.get(&got.event_id), "{got:?}");
    }
    assert_eq!(read[1].metadata.trace_parent, None, "appended without one");

    let by_command = store.read_command(&many, command).await.unwrap();
    assert_eq!(by_command.len(), 3);
    for got in &by_command {
        assert_eq!(Some(&got.metadata), sent.get(&got.event_id));
        assert_eq!(
            got.metadata.trace_parent.map(|t| t.trace_id()),
            Some(trace.trace_id())
        );
    }

    // The feed shows an event once older transactions have ended: page until all of ours came.
    let first = read.iter().map(|e| e.position).min().unwrap_or(1) - 1;
    let mut seen = 0;
    for _ in 0..500 {
        let mut after = first;
        seen = 0;
        loop {
            let page = store.read_all(after, 1_000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.position;
            for got in page.iter().filter(|e| sent.contains_key(&e.event_id)) {
                assert_eq!(
                    Some(&got.metadata),
                    sent.get(&got.event_id),
                    "read_all: {got:?}"
                );
                seen += 1;
            }
        }
        if seen == sent.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen,
        sent.len(),
        "read_all returned every event of this case"
    );
}
