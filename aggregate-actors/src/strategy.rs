//! Snapshot strategies: when to persist a snapshot after a successful command.
//!
//! A strategy is asked after every command that stored events, with a [`SnapshotContext`]
//! describing the state, the new events, and how long ago and how many events ago the last
//! snapshot was taken. It only answers yes or no: the actor encodes the state and the snapshot
//! writer stores it in the background, so a strategy never slows the reply.
//!
//! Built-in: [`Never`], [`EveryNEvents`], [`Interval`], [`Hybrid`], [`Bounded`], [`Predicate`],
//! [`ReplayCost`], [`SizeThreshold`]. Any type implementing [`SnapshotStrategy`] works the same
//! way, and strategies compose ([`Compose`]): `a.or(b)` snapshots when either says so,
//! `a.and(b)` when both do.
//!
//! ```
//! use std::time::Duration;
//! use aggregate_actors::strategy::{Compose, EveryNEvents, Interval, SizeThreshold};
//! # use aggregate_actors::{Aggregate, AggregateSettings, Context};
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Ev;
//! # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
//! # struct Doc;
//! # impl Aggregate for Doc {
//! #     const TYPE: &'static str = "doc";
//! #     type Command = (); type Event = Ev; type State = Vec<u8>; type Error = No;
//! #     fn decide(_: &Vec<u8>, _: &(), _: &mut Context<'_, Self>) -> Result<Vec<Ev>, No> { Ok(vec![]) }
//! #     fn apply(_: &mut Vec<u8>, _: &Ev) {}
//! # }
//! // Every 64 KiB of events, or every 500 events if they are small, but at most once a second.
//! let strategy = SizeThreshold::event_bytes(64 * 1024)
//!     .or(EveryNEvents::new(500))
//!     .and(Interval::new(Duration::from_secs(1)));
//! let settings = AggregateSettings::<Doc>::new().strategy(strategy);
//! ```

use std::cell::OnceCell;
use std::time::Duration;

use crate::aggregate::Aggregate;

mod combine;
mod size;

pub use combine::{And, Compose, Or};
pub use size::SizeThreshold;

/// What the last activation of this actor cost: how many events it replayed and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivationCost {
    /// Events replayed after the snapshot (or from the start).
    pub events_replayed: u64,
    /// Wall time of the activation, snapshot load included.
    pub elapsed: Duration,
}

/// What a strategy sees after a successful command.
///
/// Built by the actor; [`SnapshotContext::new`] builds one for a test of a strategy.
#[derive(Debug)]
pub struct SnapshotContext<'a, A: Aggregate> {
    /// The state after the command's events.
    pub state: &'a A::State,
    /// The events the command stored, oldest first. Never empty.
    pub new_events: &'a [A::Event],
    /// The stream version after the command.
    pub version: u64,
    /// Version of the newest snapshot this actor knows of (taken or loaded); 0 for none.
    pub last_snapshot_version: u64,
    /// Time since that snapshot was taken, or since activation when this actor has taken none.
    pub since_last_snapshot: Duration,
    /// What the activation of this actor cost.
    pub activation: ActivationCost,
    /// Whether this actor has taken a snapshot since it was activated.
    pub snapshotted_since_activation: bool,
    /// Bytes of event payload (as stored) since the last snapshot, the new events included.
    /// Events replayed at activation count too.
    pub event_bytes_since_snapshot: u64,
    /// Encoded size of the last snapshot's body (the state and the recent command ids) before
    /// compression; 0 when there is none.
    pub last_snapshot_size: u64,
    /// [`state_size`](Self::state_size), once computed.
    state_size: OnceCell<u64>,
}

impl<'a, A: Aggregate> SnapshotContext<'a, A> {
    /// The context of a command that stored `new_events`, bringing the stream to `version`,
    /// with no snapshot so far, a free activation, and no event bytes counted (set the public
    /// fields for other cases). For testing a strategy.
    pub fn new(state: &'a A::State, new_events: &'a [A::Event], version: u64) -> Self {
        Self {
            state,
            new_events,
            version,
            last_snapshot_version: 0,
            since_last_snapshot: Duration::ZERO,
            activation: ActivationCost::default(),
            snapshotted_since_activation: false,
            event_bytes_since_snapshot: 0,
            last_snapshot_size: 0,
            state_size: OnceCell::new(),
        }
    }

    /// The size of the state encoded as it is stored (MessagePack, before compression).
    /// Counted on the first call, without allocating, then remembered; a strategy that never
    /// asks pays nothing. 0 if the state cannot be encoded.
    pub fn state_size(&self) -> u64 {
        *self
            .state_size
            .get_or_init(|| size::encoded_size(self.state))
    }

    /// Events stored since the last snapshot.
    pub fn events_since_snapshot(&self) -> u64 {
        self.version.saturating_sub(self.last_snapshot_version)
    }

    /// The version of the first of the new events.
    pub fn first_new_version(&self) -> u64 {
        self.version + 1 - self.new_events.len() as u64
    }
}

/// Decides when to take a snapshot. Implement it for your own rules.
pub trait SnapshotStrategy<A: Aggregate>: Send + Sync + 'static {
    /// True when a snapshot should be taken now.
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool;
}

/// Never snapshot (every activation replays the whole stream).
#[derive(Debug, Clone, Copy, Default)]
pub struct Never;

impl<A: Aggregate> SnapshotStrategy<A> for Never {
    fn should_snapshot(&self, _: &SnapshotContext<'_, A>) -> bool {
        false
    }
}

/// Snapshot once at least `n` events were stored since the last snapshot.
#[derive(Debug, Clone, Copy)]
pub struct EveryNEvents {
    n: u64,
}

impl EveryNEvents {
    /// Every `n` events (`n` of 0 is treated as 1).
    pub fn new(n: u64) -> Self {
        Self { n: n.max(1) }
    }
}

impl<A: Aggregate> SnapshotStrategy<A> for EveryNEvents {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        context.events_since_snapshot() >= self.n
    }
}

/// Snapshot when at least `every` has passed since the last snapshot and there are new events.
#[derive(Debug, Clone, Copy)]
pub struct Interval {
    every: Duration,
}

impl Interval {
    /// Every `every` of time, only when events were stored since.
    pub fn new(every: Duration) -> Self {
        Self { every }
    }
}

impl<A: Aggregate> SnapshotStrategy<A> for Interval {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        context.events_since_snapshot() > 0 && context.since_last_snapshot >= self.every
    }
}

/// Snapshot after `n` events or after `every` of time, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Hybrid {
    count: EveryNEvents,
    interval: Interval,
}

impl Hybrid {
    /// Every `n` events or every `every`, whichever comes first.
    pub fn new(n: u64, every: Duration) -> Self {
        Self {
            count: EveryNEvents::new(n),
            interval: Interval::new(every),
        }
    }
}

impl<A: Aggregate> SnapshotStrategy<A> for Hybrid {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        SnapshotStrategy::<A>::should_snapshot(&self.count, context)
            || SnapshotStrategy::<A>::should_snapshot(&self.interval, context)
    }
}

/// Snapshot near every `every` versions (when a command crosses a multiple of `every`), but
/// never within `min_gap` events of the last snapshot, and always once `max_gap` events have
/// accumulated. Multi-event commands that jump over a multiple still trigger it.
#[derive(Debug, Clone, Copy)]
pub struct Bounded {
    every: u64,
    min_gap: u64,
    max_gap: u64,
}

impl Bounded {
    /// Around every `every` versions, at least `min_gap` and at most `max_gap` events apart.
    /// Zero values are raised to 1, and `max_gap` to at least `min_gap`.
    pub fn new(every: u64, min_gap: u64, max_gap: u64) -> Self {
        let min_gap = min_gap.max(1);
        Self {
            every: every.max(1),
            min_gap,
            max_gap: max_gap.max(min_gap),
        }
    }
}

impl<A: Aggregate> SnapshotStrategy<A> for Bounded {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        let since = context.events_since_snapshot();
        if since >= self.max_gap {
            return true;
        }
        if since < self.min_gap {
            return false;
        }
        let before = context.first_new_version().saturating_sub(1);
        context.version / self.every > before / self.every
    }
}

/// Snapshot when a user function says so for any of the new events. It sees the state after
/// the whole command, each new event, and that event's version.
pub struct Predicate<A: Aggregate> {
    test: Box<PredicateFn<A>>,
}

type PredicateFn<A> =
    dyn Fn(&<A as Aggregate>::State, &<A as Aggregate>::Event, u64) -> bool + Send + Sync;

impl<A: Aggregate> Predicate<A> {
    /// Snapshot when `test(state, event, version)` is true for a new event.
    pub fn new(test: impl Fn(&A::State, &A::Event, u64) -> bool + Send + Sync + 'static) -> Self {
        Self {
            test: Box::new(test),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for Predicate<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Predicate(..)")
    }
}

impl<A: Aggregate> SnapshotStrategy<A> for Predicate<A> {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        let first = context.first_new_version();
        (first..)
            .zip(context.new_events)
            .any(|(version, event)| (self.test)(context.state, event, version))
    }
}

/// Snapshot once after an activation that was expensive: it replayed more than `max_events`
/// events or took longer than `max_elapsed`. Cheap activations never snapshot, so aggregates
/// that are always cheap to load cost no snapshot writes at all.
#[derive(Debug, Clone, Copy)]
pub struct ReplayCost {
    max_events: u64,
    max_elapsed: Duration,
}

impl ReplayCost {
    /// Snapshot after activations that replayed more than `max_events` or took longer than
    /// `max_elapsed`.
    pub fn new(max_events: u64, max_elapsed: Duration) -> Self {
        Self {
            max_events,
            max_elapsed,
        }
    }
}

impl<A: Aggregate> SnapshotStrategy<A> for ReplayCost {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        let expensive = context.activation.events_replayed > self.max_events
            || context.activation.elapsed > self.max_elapsed;
        expensive && !context.snapshotted_since_activation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;
    use serde::{Deserialize, Serialize};

    struct Counter;

    #[derive(Debug, Serialize, Deserialize)]
    struct Added(u64);

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct NoError;

    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        type Command = u64;
        type Event = Added;
        type State = u64;
        type Error = NoError;
        fn decide(_: &u64, n: &u64, _ctx: &mut Context<'_, Self>) -> Result<Vec<Added>, NoError> {
            Ok(vec![Added(*n)])
        }
        fn apply(state: &mut u64, event: &Added) {
            *state += event.0;
        }
    }

    const ONE: [Added; 1] = [Added(1)];
    const THREE: [Added; 3] = [Added(1), Added(1), Added(1)];

    fn ctx<'a>(
        state: &'a u64,
        new_events: &'a [Added],
        version: u64,
        last_snapshot_version: u64,
    ) -> SnapshotContext<'a, Counter> {
        SnapshotContext {
            last_snapshot_version,
            ..SnapshotContext::new(state, new_events, version)
        }
    }

    fn decides<S: SnapshotStrategy<Counter>>(s: &S, c: &SnapshotContext<'_, Counter>) -> bool {
        s.should_snapshot(c)
    }

    #[test]
    fn never_never_snapshots() {
        assert!(!decides(&Never, &ctx(&0, &ONE, 1_000_000, 0)));
    }

    #[test]
    fn every_n_events_fires_once_n_events_accumulated() {
        let s = EveryNEvents::new(10);
        assert!(!decides(&s, &ctx(&0, &ONE, 9, 0)));
        assert!(decides(&s, &ctx(&0, &ONE, 10, 0)));
        assert!(!decides(&s, &ctx(&0, &ONE, 19, 10)));
        assert!(decides(&s, &ctx(&0, &THREE, 22, 10)));
    }

    #[test]
    fn interval_fires_after_the_interval_only_with_new_events() {
        let s = Interval::new(Duration::from_secs(5));
        let mut c = ctx(&0, &ONE, 3, 2);
        c.since_last_snapshot = Duration::from_secs(4);
        assert!(!decides(&s, &c));
        c.since_last_snapshot = Duration::from_secs(5);
        assert!(decides(&s, &c));
        c.last_snapshot_version = 3;
        assert!(!decides(&s, &c), "no events since the last snapshot");
    }

    #[test]
    fn hybrid_fires_on_count_or_time_whichever_first() {
        let s = Hybrid::new(100, Duration::from_secs(60));
        let mut c = ctx(&0, &ONE, 50, 0);
        assert!(!decides(&s, &c));
        c.since_last_snapshot = Duration::from_secs(61);
        assert!(decides(&s, &c));
        assert!(decides(&s, &ctx(&0, &ONE, 100, 0)));
    }

    #[test]
    fn bounded_fires_when_crossing_a_multiple_respecting_min_and_max() {
        let s = Bounded::new(100, 20, 150);
        // Crossing 100 with enough distance from the last snapshot.
        assert!(decides(&s, &ctx(&0, &ONE, 100, 0)));
        // A multi-event command that jumps over 200 still counts as crossing it.
        assert!(decides(&s, &ctx(&0, &THREE, 201, 100)));
        // Crossing 200 only 10 events after a snapshot at 190: too close.
        assert!(!decides(&s, &ctx(&0, &ONE, 200, 190)));
        // Not crossing anything, but 150 events since the last snapshot: forced.
        assert!(decides(&s, &ctx(&0, &ONE, 340, 190)));
        assert!(!decides(&s, &ctx(&0, &ONE, 339, 190)));
    }

    #[test]
    fn predicate_sees_each_new_event_with_its_version() {
        let s = Predicate::<Counter>::new(|_, _, version| version == 11);
        assert!(!decides(&s, &ctx(&0, &ONE, 10, 0)));
        assert!(decides(&s, &ctx(&0, &THREE, 12, 0)), "versions 10, 11, 12");
        let big = Predicate::<Counter>::new(|state, _, _| *state > 1_000);
        assert!(decides(&big, &ctx(&1_001, &ONE, 1, 0)));
    }

    #[test]
    fn replay_cost_fires_once_after_an_expensive_activation() {
        let s = ReplayCost::new(500, Duration::from_millis(50));
        let mut c = ctx(&0, &ONE, 10, 0);
        assert!(!decides(&s, &c), "cheap activation");
        c.activation = ActivationCost {
            events_replayed: 501,
            elapsed: Duration::from_millis(1),
        };
        assert!(decides(&s, &c));
        c.snapshotted_since_activation = true;
        assert!(!decides(&s, &c), "only once per activation");
        c.snapshotted_since_activation = false;
        c.activation = ActivationCost {
            events_replayed: 0,
            elapsed: Duration::from_millis(51),
        };
        assert!(decides(&s, &c), "slow activation");
    }
}
