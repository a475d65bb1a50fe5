//! [`RuntimeStats`] and the `metrics` facade counters behind them.
//!
//! A directory resolves its metric handles when it is made, so install a global `metrics`
//! recorder before making one: updates of a directory made earlier go nowhere.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use metrics::{Counter, Gauge};

use crate::virtual_actor::PassivationReason;

/// Counter: successful activations.
pub const ACTIVATIONS_TOTAL: &str = "actor_runtime_activations_total";
/// Counter: activations that failed (an `activate` error or panic).
pub const ACTIVATION_FAILURES_TOTAL: &str = "actor_runtime_activation_failures_total";
/// Counter: normal stops, labelled `reason` = idle | evicted | requested | shutdown.
pub const PASSIVATIONS_TOTAL: &str = "actor_runtime_passivations_total";
/// Counter: actors that stopped abnormally (a panic in `handle` or `passivate`, or killed).
pub const CRASHES_TOTAL: &str = "actor_runtime_crashes_total";
/// Counter: calls refused because the mailbox was full.
pub const OVERLOADED_TOTAL: &str = "actor_runtime_overloaded_total";
/// Counter: calls that got no reply in time.
pub const TIMEOUTS_TOTAL: &str = "actor_runtime_timeouts_total";
/// Gauge: live actors (activating, running or stopping).
pub const LIVE_ACTORS: &str = "actor_runtime_live_actors";
/// Counter: timer ticks skipped because the actor's mailbox was full (see [`crate::Timers`]).
pub const TIMER_TICKS_SKIPPED_TOTAL: &str = "actor_runtime_timer_ticks_skipped_total";

/// Counts a timer tick that found its actor's mailbox full.
pub(crate) fn timer_tick_skipped() {
    metrics::counter!(TIMER_TICKS_SKIPPED_TOTAL).increment(1);
}

/// A snapshot of one directory's counters. Every metric also carries an `actor` label (the
/// virtual actor's type name) so directories of different actor types can be told apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Actors currently live: from the start of their activation until fully stopped.
    pub live: usize,
    /// Successful activations.
    pub activations: u64,
    /// Failed activations (`activate` returned an error or panicked).
    pub activation_failures: u64,
    /// Normal stops, all reasons (evictions included).
    pub passivations: u64,
    /// Of the passivations, those with reason [`PassivationReason::Evicted`].
    pub evictions: u64,
    /// Abnormal stops: a panic in `handle` or `passivate`, or killed at the end of shutdown.
    pub crashes: u64,
    /// Calls refused with [`RuntimeError::Overloaded`](crate::RuntimeError::Overloaded).
    pub overloaded: u64,
    /// Calls that ended with [`RuntimeError::Timeout`](crate::RuntimeError::Timeout).
    pub timeouts: u64,
    /// Live actors looked at while choosing eviction victims. Divided by `evictions` it is the
    /// cost of one choice, which stays a small constant however many actors are live.
    pub eviction_candidates_examined: u64,
}

/// The live counters of one directory; each update also goes to the `metrics` facade.
pub(crate) struct Counters {
    live: AtomicUsize,
    activations: AtomicU64,
    activation_failures: AtomicU64,
    passivations: AtomicU64,
    evictions: AtomicU64,
    crashes: AtomicU64,
    overloaded: AtomicU64,
    timeouts: AtomicU64,
    eviction_candidates_examined: AtomicU64,
    facade: Facade,
}

/// The directory's `metrics` handles, resolved once when it is made (so a global recorder must
/// be installed before, as for the aggregate metrics): looking one up by name and labels on
/// each update cost about 400 instructions, four times per activation and passivation.
struct Facade {
    live: Gauge,
    activations: Counter,
    activation_failures: Counter,
    /// By [`PassivationReason`], in the order of [`reason_index`].
    passivations: [Counter; 4],
    crashes: Counter,
    overloaded: Counter,
    timeouts: Counter,
}

impl Facade {
    fn new(actor: &'static str) -> Self {
        let passivations = |reason: PassivationReason| metrics::counter!(PASSIVATIONS_TOTAL, "actor" => actor, "reason" => reason.as_str());
        Self {
            live: metrics::gauge!(LIVE_ACTORS, "actor" => actor),
            activations: metrics::counter!(ACTIVATIONS_TOTAL, "actor" => actor),
            activation_failures: metrics::counter!(ACTIVATION_FAILURES_TOTAL, "actor" => actor),
            passivations: [
                passivations(PassivationReason::Idle),
                passivations(PassivationReason::Evicted),
                passivations(PassivationReason::Requested),
                passivations(PassivationReason::Shutdown),
            ],
            crashes: metrics::counter!(CRASHES_TOTAL, "actor" => actor),
            overloaded: metrics::counter!(OVERLOADED_TOTAL, "actor" => actor),
            timeouts: metrics::counter!(TIMEOUTS_TOTAL, "actor" => actor),
        }
    }
}

/// Where `reason`'s counter sits in [`Facade::passivations`].
fn reason_index(reason: PassivationReason) -> usize {
    match reason {
        PassivationReason::Idle => 0,
        PassivationReason::Evicted => 1,
        PassivationReason::Requested => 2,
        PassivationReason::Shutdown => 3,
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("stats", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl Counters {
    pub(crate) fn new(actor: &'static str) -> Self {
        Self {
            live: AtomicUsize::new(0),
            activations: AtomicU64::new(0),
            activation_failures: AtomicU64::new(0),
            passivations: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            eviction_candidates_examined: AtomicU64::new(0),
            facade: Facade::new(actor),
        }
    }

    pub(crate) fn snapshot(&self) -> RuntimeStats {
        RuntimeStats {
            live: self.live.load(Ordering::Relaxed),
            activations: self.activations.load(Ordering::Relaxed),
            activation_failures: self.activation_failures.load(Ordering::Relaxed),
            passivations: self.passivations.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            crashes: self.crashes.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            eviction_candidates_examined: self.eviction_candidates_examined.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn live_started(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.facade.live.increment(1.0);
    }

    pub(crate) fn live_ended(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.facade.live.decrement(1.0);
    }

    pub(crate) fn activated(&self) {
        self.activations.fetch_add(1, Ordering::Relaxed);
        self.facade.activations.increment(1);
    }

    pub(crate) fn activation_failed(&self) {
        self.activation_failures.fetch_add(1, Ordering::Relaxed);
        self.facade.activation_failures.increment(1);
    }

    pub(crate) fn passivated(&self, reason: PassivationReason) {
        self.passivations.fetch_add(1, Ordering::Relaxed);
        if reason == PassivationReason::Evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.facade.passivations[reason_index(reason)].increment(1);
    }

    pub(crate) fn crashed(&self) {
        self.crashes.fetch_add(1, Ordering::Relaxed);
        self.facade.crashes.increment(1);
    }

    pub(crate) fn overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
        self.facade.overloaded.increment(1);
    }

    pub(crate) fn eviction_candidates_examined(&self, examined: u64) {
        self.eviction_candidates_examined
            .fetch_add(examined, Ordering::Relaxed);
    }

    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.facade.timeouts.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn the_handles_resolved_at_creation_publish_every_update_under_the_actors_label() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let counters = metrics::with_local_recorder(&recorder, || Counters::new("probe"));
        // Updated outside the recorder's scope: only the handles resolved above can reach it.
        counters.live_started();
        counters.live_started();
        counters.live_ended();
        counters.activated();
        counters.passivated(PassivationReason::Evicted);
        counters.passivated(PassivationReason::Evicted);
        counters.passivated(PassivationReason::Idle);
        counters.timed_out();
        // One snapshot: taking one resets the recorder's counters.
        let snapshot = snapshotter.snapshot().into_vec();
        let value = |name: &str, reason: Option<&str>| {
            snapshot
                .iter()
                .find(|(key, ..)| {
                    let key = key.key();
                    let label = |k: &str| {
                        key.labels()
                            .find(|l| l.key() == k)
                            .map(|l| l.value().to_owned())
                    };
                    key.name() == name
                        && label("actor").as_deref() == Some("probe")
                        && label("reason").as_deref() == reason
                })
                .map(|(.., value)| match value {
                    DebugValue::Counter(count) => *count as f64,
                    DebugValue::Gauge(level) => level.into_inner(),
                    DebugValue::Histogram(_) => f64::NAN,
                })
        };
        assert_eq!(value(LIVE_ACTORS, None), Some(1.0));
        assert_eq!(value(ACTIVATIONS_TOTAL, None), Some(1.0));
        assert_eq!(value(PASSIVATIONS_TOTAL, Some("evicted")), Some(2.0));
        assert_eq!(value(PASSIVATIONS_TOTAL, Some("idle")), Some(1.0));
        assert_eq!(value(PASSIVATIONS_TOTAL, Some("shutdown")), Some(0.0));
        assert_eq!(value(TIMEOUTS_TOTAL, None), Some(1.0));
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.live,
                stats.activations,
                stats.passivations,
                stats.evictions
            ),
            (1, 1, 3, 2)
        );
    }
}
