//! Counters and histograms reach the `metrics` facade, labelled by aggregate type, and agree
//! with the in-process stats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{AggregateSettings, Executor};
use common::{Ledger, LedgerCommand};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// A counter's name, labels and value.
type CounterValue = (String, Vec<(String, String)>, u64);

fn counter(snapshot: &[CounterValue], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| *value)
        .sum()
}

#[test]
fn commands_activations_and_snapshots_are_published_through_the_metrics_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Metric handles are resolved when a type is registered, so the recorder must be in place
    // while the executor is built.
    let executor = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            Executor::in_memory()
                .register::<Ledger>(AggregateSettings::new().strategy(EveryNEvents::new(5)))
                .build()
                .unwrap()
        })
    });
    let stats = runtime.block_on(async {
        for i in 0..12 {
            executor
                .execute::<Ledger>("m", LedgerCommand::Add(i))
                .await
                .unwrap();
        }
        let _ = executor
            .execute::<Ledger>("m", LedgerCommand::Overdraw)
            .await;
        executor.flush_snapshots().await;
        executor.stats_of::<Ledger>().unwrap().aggregate
    });

    let mut counters = Vec::new();
    let mut replayed_histogram = None;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        match value {
            DebugValue::Counter(v) => counters.push((key.key().name().to_owned(), labels, v)),
            DebugValue::Histogram(values) if key.key().name() == "aggregate_events_replayed" => {
                replayed_histogram = Some(values.len());
            }
            _ => {}
        }
    }
    let ledger = ("aggregate", "ledger");
    assert_eq!(
        counter(
            &counters,
            "aggregate_commands_total",
            &[ledger, ("outcome", "ok")]
        ),
        12
    );
    assert_eq!(
        counter(
            &counters,
            "aggregate_commands_total",
            &[ledger, ("outcome", "rejected")]
        ),
        1
    );
    assert_eq!(
        counter(&counters, "aggregate_activations_total", &[ledger]),
        1
    );
    assert_eq!(
        counter(
            &counters,
            "aggregate_snapshots_total",
            &[ledger, ("outcome", "taken")]
        ),
        stats.snapshots_taken
    );
    assert!(stats.snapshots_taken >= 1);
    assert_eq!(
        counter(&counters, "aggregate_snapshot_bytes_total", &[ledger]),
        stats.snapshot_bytes_stored
    );
    assert_eq!(
        replayed_histogram,
        Some(1),
        "one activation recorded in the replay-size histogram"
    );
    assert_eq!(stats.commands_succeeded, 12);
    assert_eq!(stats.commands_rejected, 1);
    runtime.block_on(executor.shutdown());
}
