//! [`RuntimeStats`] and the `metrics` facade counters behind them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
#[derive(Debug)]
pub(crate) struct Counters {
    actor: &'static str,
    live: AtomicUsize,
    activations: AtomicU64,
    activation_failures: AtomicU64,
    passivations: AtomicU64,
    evictions: AtomicU64,
    crashes: AtomicU64,
    overloaded: AtomicU64,
    timeouts: AtomicU64,
    eviction_candidates_examined: AtomicU64,
}

impl Counters {
    pub(crate) fn new(actor: &'static str) -> Self {
        Self {
            actor,
            live: AtomicUsize::new(0),
            activations: AtomicU64::new(0),
            activation_failures: AtomicU64::new(0),
            passivations: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            eviction_candidates_examined: AtomicU64::new(0),
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
        metrics::gauge!(LIVE_ACTORS, "actor" => self.actor).increment(1.0);
    }

    pub(crate) fn live_ended(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(LIVE_ACTORS, "actor" => self.actor).decrement(1.0);
    }

    pub(crate) fn activated(&self) {
        self.activations.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ACTIVATIONS_TOTAL, "actor" => self.actor).increment(1);
    }

    pub(crate) fn activation_failed(&self) {
        self.activation_failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ACTIVATION_FAILURES_TOTAL, "actor" => self.actor).increment(1);
    }

    pub(crate) fn passivated(&self, reason: PassivationReason) {
        self.passivations.fetch_add(1, Ordering::Relaxed);
        if reason == PassivationReason::Evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!(PASSIVATIONS_TOTAL, "actor" => self.actor, "reason" => reason.as_str())
            .increment(1);
    }

    pub(crate) fn crashed(&self) {
        self.crashes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(CRASHES_TOTAL, "actor" => self.actor).increment(1);
    }

    pub(crate) fn overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(OVERLOADED_TOTAL, "actor" => self.actor).increment(1);
    }

    pub(crate) fn eviction_candidates_examined(&self, examined: u64) {
        self.eviction_candidates_examined
            .fetch_add(examined, Ordering::Relaxed);
    }

    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(TIMEOUTS_TOTAL, "actor" => self.actor).increment(1);
    }
}
