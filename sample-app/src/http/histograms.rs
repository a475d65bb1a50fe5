//! Activation histograms kept in process, for the dashboard.
//!
//! The framework records every activation into two histograms of the `metrics` facade,
//! `aggregate_events_replayed` (events) and `aggregate_activation_seconds`, labelled
//! `aggregate = TYPE`. The Prometheus exporter renders them as summaries (quantiles) on
//! `/metrics`, and [`AggregateStats`](aggregate_actors::AggregateStats) keeps only their totals
//! and maxima, so neither gives the distribution a page can draw. [`install_recorder`] installs
//! the Prometheus recorder behind a [`TappedRecorder`], which hands every metric to it unchanged
//! and also counts those two histograms into fixed buckets per aggregate type; `GET /stats`
//! reads them with [`replay_size`] and [`activation_time`].
//!
//! The buckets are process-wide, like the recorder they hang off: without an installed
//! [`TappedRecorder`] they stay empty and both functions answer `None`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SetRecorderError,
    SharedString, Unit,
};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

/// The facade histogram of events replayed per activation.
pub const REPLAY_METRIC: &str = "aggregate_events_replayed";

/// The facade histogram of activation wall time, in seconds.
pub const ACTIVATION_METRIC: &str = "aggregate_activation_seconds";

/// Upper bounds (inclusive) of the replay-size buckets, in events; one more bucket holds the
/// rest.
pub const REPLAY_BOUNDS: [f64; 14] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
];

/// Upper bounds (inclusive) of the activation-time buckets, in milliseconds; one more bucket
/// holds the rest.
pub const ACTIVATION_BOUNDS_MS: [f64; 15] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0,
];

/// Which of the two histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Replay,
    Activation,
}

impl Kind {
    fn of(name: &str) -> Option<Self> {
        match name {
            REPLAY_METRIC => Some(Kind::Replay),
            ACTIVATION_METRIC => Some(Kind::Activation),
            _ => None,
        }
    }

    fn bounds(self) -> &'static [f64] {
        match self {
            Kind::Replay => &REPLAY_BOUNDS,
            Kind::Activation => &ACTIVATION_BOUNDS_MS,
        }
    }

    /// Recorded values are multiplied by this: seconds become milliseconds.
    fn scale(self) -> f64 {
        match self {
            Kind::Replay => 1.0,
            Kind::Activation => 1_000.0,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Replay => "events",
            Kind::Activation => "ms",
        }
    }
}

/// The live counts of one histogram of one aggregate type.
struct Buckets {
    kind: Kind,
    /// One per bound, then the overflow bucket.
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum of the scaled values, as `f64` bits.
    sum: AtomicU64,
}

impl Buckets {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            counts: (0..=kind.bounds().len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn record(&self, value: f64) {
        let value = value * self.kind.scale();
        let bounds = self.kind.bounds();
        let index = bounds.partition_point(|bound| *bound < value);
        self.counts[index].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        // Never fails: the closure always returns `Some`.
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let bounds = self.kind.bounds();
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, count)| Bucket {
                le: bounds.get(i).copied(),
                count: count.load(Relaxed),
            })
            .collect();
        HistogramSnapshot {
            unit: self.kind.unit(),
            count: self.count.load(Relaxed),
            sum: f64::from_bits(self.sum.load(Relaxed)),
            buckets,
        }
    }
}

/// One bucket of a [`HistogramSnapshot`]: the values above the previous bucket's bound and at
/// most `le`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// The upper bound (inclusive); `None` for the last bucket, which has none.
    pub le: Option<f64>,
    /// Values counted in this bucket alone (not cumulative).
    pub count: u64,
}

/// A point-in-time copy of one histogram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    /// What the values measure: `events` or `ms`.
    pub unit: &'static str,
    /// Values recorded.
    pub count: u64,
    /// Their sum, in `unit`.
    pub sum: f64,
    /// The buckets in bound order, the unbounded one last.
    pub buckets: Vec<Bucket>,
}

type Registry = Mutex<HashMap<(Kind, String), Arc<Buckets>>>;

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

fn buckets(kind: Kind, aggregate_type: &str) -> Arc<Buckets> {
    let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(
        registry
            .entry((kind, aggregate_type.to_owned()))
            .or_insert_with(|| Arc::new(Buckets::new(kind))),
    )
}

fn snapshot(kind: Kind, aggregate_type: &str) -> Option<HistogramSnapshot> {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    registry
        .get(&(kind, aggregate_type.to_owned()))
        .map(|buckets| buckets.snapshot())
}

/// Events replayed per activation of `aggregate_type`, since the process started; `None` when
/// no [`TappedRecorder`] saw the type registered.
pub fn replay_size(aggregate_type: &str) -> Option<HistogramSnapshot> {
    snapshot(Kind::Replay, aggregate_type)
}

/// Activation wall time of `aggregate_type` in milliseconds, since the process started;
/// `None` when no [`TappedRecorder`] saw the type registered.
pub fn activation_time(aggregate_type: &str) -> Option<HistogramSnapshot> {
    snapshot(Kind::Activation, aggregate_type)
}

/// Records into the wrapped recorder's histogram and into the buckets.
struct Tee {
    inner: Histogram,
    buckets: Arc<Buckets>,
}

impl HistogramFn for Tee {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.buckets.record(value);
    }
}

/// A [`Recorder`] that passes everything to `R` and also counts the activation histograms
/// ([`REPLAY_METRIC`], [`ACTIVATION_METRIC`]) into the buckets [`replay_size`] and
/// [`activation_time`] read.
#[derive(Debug)]
pub struct TappedRecorder<R> {
    inner: R,
}

impl<R: Recorder> TappedRecorder<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner }
    }

    /// The wrapped recorder.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Recorder> Recorder for TappedRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let inner = self.inner.register_histogram(key, metadata);
        let Some(kind) = Kind::of(key.name()) else {
            return inner;
        };
        let Some(label) = key.labels().find(|label| label.key() == "aggregate") else {
            return inner;
        };
        Histogram::from_arc(Arc::new(Tee {
            inner,
            buckets: buckets(kind, label.value()),
        }))
    }
}

/// Installs the Prometheus recorder (what `/metrics` renders) as the global recorder, wrapped
/// in a [`TappedRecorder`]; returns its handle. Call it before building the executor: the
/// framework resolves its metric handles when aggregate types are registered.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(TappedRecorder::new(recorder)).map_err(|error| {
        BuildError::FailedToSetGlobalRecorder(SetRecorderError(error.into_inner().into_inner()))
    })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_counts_both_histograms_into_buckets_and_passes_them_on() {
        let inner = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = inner.snapshotter();
        let recorder = TappedRecorder::new(inner);
        metrics::with_local_recorder(&recorder, || {
            let replayed = metrics::histogram!(REPLAY_METRIC, "aggregate" => "tap-test");
            for value in [0.0, 0.0, 1.0, 3.0, 7.0, 50_000.0] {
                replayed.record(value);
            }
            let seconds = metrics::histogram!(ACTIVATION_METRIC, "aggregate" => "tap-test");
            seconds.record(0.000_05); // 0.05 ms
            seconds.record(0.003); // 3 ms
            // Another histogram and a histogram without the label are passed on only.
            metrics::histogram!("other_histogram", "aggregate" => "tap-test").record(1.0);
            metrics::histogram!(REPLAY_METRIC).record(1.0);
        });

        let replay = replay_size("tap-test").unwrap_or_else(|| panic!("replay tapped"));
        assert_eq!(replay.unit, "events");
        assert_eq!(replay.count, 6);
        assert!((replay.sum - 50_011.0).abs() < 1e-9);
        let counts: Vec<(Option<f64>, u64)> = replay
            .buckets
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.le, b.count))
            .collect();
        assert_eq!(
            counts,
            [
                (Some(0.0), 2),
                (Some(1.0), 1),
                (Some(5.0), 1),
                (Some(10.0), 1),
                (None, 1)
            ]
        );

        let activation = activation_time("tap-test").unwrap_or_else(|| panic!("activation tapped"));
        assert_eq!(activation.unit, "ms");
        assert_eq!(activation.count, 2);
        assert_eq!(activation.buckets[0].count, 1); // ≤ 0.1 ms
        assert_eq!(activation.buckets[5].count, 1); // ≤ 5 ms
        assert_eq!(activation.buckets.len(), ACTIVATION_BOUNDS_MS.len() + 1);

        assert_eq!(replay_size("never-registered"), None);
        // The wrapped recorder saw every value, the untapped ones included.
        assert_eq!(snapshotter.snapshot().into_vec().len(), 4);
    }
}
