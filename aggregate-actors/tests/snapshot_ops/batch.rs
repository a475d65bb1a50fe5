//! Snapshots in bulk: a rebuild of every stream of a type after a `STATE_SCHEMA_VERSION` bump
//! (10 000 streams; afterwards every activation starts from a new snapshot and skips none as
//! invalid), resuming from a watermark or by skipping current snapshots, and
//! `create_snapshots` for a list of ids, on both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::common::{Stores, memory, postgres};
use aggregate_actors::batch::{BatchOptions, BatchProgress};
use aggregate_actors::event_stores::{EventStore, NewEvent, StreamId};
use aggregate_actors::{Aggregate, AggregateSettings, Context, Executor, ExecutorError};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Added(u64);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

/// The tally as first shipped (state schema 1).
struct TallyV1;
/// The same stream after a state change that old snapshots cannot be trusted for.
struct TallyV2;

macro_rules! tally {
    ($name:ident, $schema:expr) => {
        impl Aggregate for $name {
            const TYPE: &'static str = "tally";
            const STATE_SCHEMA_VERSION: u32 = $schema;
            type Command = u64;
            type Event = Added;
            type State = Tally;
            type Error = Never;

            fn decide(_: &Tally, n: &u64, _: &mut Context<'_, Self>) -> Result<Vec<Added>, Never> {
                Ok(vec![Added(*n)])
            }

            fn apply(state: &mut Tally, event: &Added) {
                state.total += event.0;
            }
        }
    };
}
tally!(TallyV1, 1);
tally!(TallyV2, 2);

fn id(i: usize) -> String {
    format!("t-{i:05}")
}

/// Three events for each of `streams` streams, appended straight to the store.
async fn seed(events: &Arc<dyn EventStore>, streams: usize) {
    stream::iter(0..streams)
        .for_each_concurrent(16, |i| {
            let events = Arc::clone(events);
            async move {
                let stream = StreamId::new("tally", id(i)).unwrap();
                let batch = (1..=3)
                    .map(|n| NewEvent::new("Added", 1, rmp_serde::to_vec(&Added(n)).unwrap()))
                    .collect();
                events.append(&stream, 0, batch).await.unwrap();
            }
        })
        .await;
}

fn executor<A: Aggregate>(stores: &Stores) -> Executor {
    Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .snapshot_writers(16)
        .register::<A>(AggregateSettings::new().snapshot_on_passivation(false))
        .build()
        .unwrap()
}

async fn rebuild_after_a_schema_bump(stores: Stores, streams: usize) {
    seed(&stores.events, streams).await;
    // Snapshots of schema 1 for every stream, as the old version left them.
    let old = executor::<TallyV1>(&stores);
    let seeded = old
        .rebuild_snapshots::<TallyV1>(&BatchOptions::default())
        .await
        .unwrap();
    assert_eq!(seeded.snapshotted as usize, streams, "{}", stores.name);
    old.shutdown().await;

    let new = executor::<TallyV2>(&stores);
    let progressed = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&progressed);
    let options = BatchOptions {
        parallelism: 16,
        progress: Some(Arc::new(move |p: BatchProgress| {
            seen.fetch_max(p.done, Ordering::Relaxed);
        })),
        ..BatchOptions::default()
    };
    let report = new.rebuild_snapshots::<TallyV2>(&options).await.unwrap();
    assert_eq!(report.aggregates as usize, streams);
    assert_eq!(report.snapshotted as usize, streams, "{report:?}");
    assert_eq!(
        report.skipped_current, 0,
        "schema 1 snapshots are not current"
    );
    assert_eq!(report.events as usize, 3 * streams);
    assert_eq!(report.done_through, Some(id(streams - 1)));
    assert_eq!(progressed.load(Ordering::Relaxed) as usize, streams);
    assert_eq!(
        new.stats_of::<TallyV2>().unwrap().runtime.live,
        0,
        "actors passivated"
    );
    println!(
        "{}: rebuilt {streams} streams in {:?}: {:.0} streams/s, {:.0} events/s",
        stores.name,
        report.elapsed,
        report.aggregates_per_second(),
        report.events_per_second()
    );
    new.shutdown().await;

    // Every activation now starts from a schema 2 snapshot at the stream's end.
    let fresh = executor::<TallyV2>(&stores);
    let started = Instant::now();
    stream::iter(0..streams)
        .for_each_concurrent(16, |i| {
            let fresh = &fresh;
            async move {
                let view = fresh.state::<TallyV2>(&id(i)).await.unwrap();
                assert_eq!(view.state.total, 6);
                assert_eq!(view.activation.snapshot_version(), Some(3), "{}", id(i));
                assert_eq!(view.activation.events_replayed, 0);
            }
        })
        .await;
    let stats = fresh.stats_of::<TallyV2>().unwrap().aggregate;
    assert_eq!(stats.activations as usize, streams);
    assert_eq!(stats.snapshots_skipped_invalid, 0);
    println!(
        "{}: {streams} activations after the rebuild in {:?}, none skipped a snapshot",
        stores.name,
        started.elapsed()
    );

    // Run again: nothing left to do.
    let again = fresh
        .rebuild_snapshots::<TallyV2>(&BatchOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.skipped_current as usize, again.snapshotted),
        (streams, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_after_a_schema_bump_gives_10_000_streams_snapshots_every_activation_uses_in_memory()
 {
    rebuild_after_a_schema_bump(memory(), 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_after_a_schema_bump_gives_10_000_streams_snapshots_every_activation_uses_on_postgres()
 {
    if let Some(stores) = postgres().await {
        rebuild_after_a_schema_bump(stores, 10_000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_resumes_from_its_watermark_or_by_skipping_current_snapshots() {
    let stores = memory();
    seed(&stores.events, 40).await;
    let executor = executor::<TallyV2>(&stores);
    // An "interrupted" run: the first 15 ids only.
    let first = executor
        .create_snapshots::<TallyV2>((0..15).map(id), &BatchOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (first.snapshotted, first.done_through.clone()),
        (15, Some(id(14)))
    );

    let resumed = executor
        .rebuild_snapshots::<TallyV2>(&BatchOptions {
            after: first.done_through.clone(),
            skip_current: false,
            ..BatchOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(resumed.aggregates, 25, "only the ids after the watermark");
    assert_eq!(resumed.snapshotted, 25);

    executor.execute::<TallyV2>(&id(7), 1).await.unwrap();
    let again = executor
        .rebuild_snapshots::<TallyV2>(&BatchOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.snapshotted, again.skipped_current),
        (1, 39),
        "only the stream with an event after its snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_snapshots_counts_unknown_ids_and_refuses_an_unregistered_type() {
    let stores = memory();
    seed(&stores.events, 3).await;
    let executor = executor::<TallyV2>(&stores);
    let report = executor
        .create_snapshots::<TallyV2>(
            [id(0), id(1), "nobody".to_owned()],
            &BatchOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((report.snapshotted, report.not_found), (2, 1));
    assert_eq!(report.failed, 0);
    let unregistered = executor
        .create_snapshots::<TallyV1>([id(0)], &BatchOptions::default())
        .await;
    assert!(matches!(
        unregistered,
        Err(ExecutorError::UnknownAggregateType("tally"))
    ));
}
