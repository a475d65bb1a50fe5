//! Measures single-stream append and read rates of both backends.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo run --release -p event-stores --example store_rates
//! # or, with a throw-away cluster:
//! scripts/pg-tmp run -- cargo run --release -p event-stores --example store_rates
//! ```
//!
//! Without `DATABASE_URL` only the in-memory backend is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_stores::contract::{fresh_stream, numbered_events};
use event_stores::testing::fresh_database;
use event_stores::{
    EventStore, InMemoryEventStore, ReadQuery, StoreLimits, StoreResult, StreamPages,
};

/// Events in the stream the read rate is measured on.
const READ_EVENTS: u64 = 100_000;

#[tokio::main]
async fn main() -> StoreResult<()> {
    println!(
        "{:<10} {:>28} {:>28} {:>24}",
        "backend",
        "append 1/append (events/s)",
        "append 100/append (events/s)",
        "read 100k (events/s)"
    );
    let memory: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    measure("memory", memory, 200_000).await?;

    if let Some(db) = fresh_database().await {
        let (events, _) = db.stores(StoreLimits::default()).await?;
        let pg: Arc<dyn EventStore> = Arc::new(events);
        measure("postgres", pg, 20_000).await?;
    }
    Ok(())
}

async fn measure(name: &str, store: Arc<dyn EventStore>, single_appends: u64) -> StoreResult<()> {
    // One event per append, each waiting for the previous one: the latency-bound rate one
    // aggregate sees.
    let stream = fresh_stream("rate-single");
    let started = Instant::now();
    for v in 0..single_appends {
        store.append(&stream, v, numbered_events(v, 1)).await?;
    }
    let single = rate(single_appends, started.elapsed());

    // Batches of 100.
    let stream = fresh_stream("rate-batch");
    let started = Instant::now();
    let mut v = 0;
    while v < READ_EVENTS {
        store.append(&stream, v, numbered_events(v, 100)).await?;
        v += 100;
    }
    let batched = rate(READ_EVENTS, started.elapsed());

    // Read the 100 000-event stream back in pages of 1 000 (best of three).
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut pages = StreamPages::new(store.as_ref(), &stream, ReadQuery::all());
        let mut n = 0;
        while let Some(page) = pages.next_page().await? {
            n += page.len() as u64;
        }
        assert_eq!(n, READ_EVENTS);
        best = best.min(started.elapsed());
    }
    let read = rate(READ_EVENTS, best);
    println!("{name:<10} {single:>28.0} {batched:>28.0} {read:>24.0}");
    Ok(())
}

fn rate(events: u64, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64()
}
