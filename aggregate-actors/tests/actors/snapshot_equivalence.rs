//! Invariant 1: for any history and any snapshot strategy, the state after re-activation
//! (snapshot + tail) equals the state after a full replay equals the plain fold of the events.
//!
//! The property says nothing if re-activation always replays from the start, so each run also
//! counts how many re-activations really started from a snapshot and asserts a lower bound on
//! that share, both over all histories and over those where only the strategy could have taken
//! a snapshot (no snapshot on passivation, no `snapshot_now`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{Ledger, LedgerCommand, LedgerEvent, Stores, expected_events, fold};
use aggregate_actors::strategy::{
    Bounded, EveryNEvents, Hybrid, Interval, Never, Predicate, ReplayCost, SnapshotStrategy,
};
use aggregate_actors::{AggregateSettings, CommandError, Executor};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

#[derive(Debug, Clone)]
enum StrategyKind {
    Never,
    EveryN(u64),
    Interval(u64),
    Hybrid(u64, u64),
    Bounded(u64, u64, u64),
    Predicate(i64),
    ReplayCost(u64),
}

impl StrategyKind {
    fn build(&self) -> Arc<dyn SnapshotStrategy<Ledger>> {
        match *self {
            StrategyKind::Never => Arc::new(Never),
            StrategyKind::EveryN(n) => Arc::new(EveryNEvents::new(n)),
            StrategyKind::Interval(micros) => {
                Arc::new(Interval::new(Duration::from_micros(micros)))
            }
            StrategyKind::Hybrid(n, micros) => {
                Arc::new(Hybrid::new(n, Duration::from_micros(micros)))
            }
            StrategyKind::Bounded(every, min, max) => Arc::new(Bounded::new(every, min, max)),
            StrategyKind::Predicate(threshold) => {
                Arc::new(Predicate::<Ledger>::new(move |state, event, _| {
                    matches!(event, LedgerEvent::Noted { .. }) || state.total > threshold
                }))
            }
            StrategyKind::ReplayCost(max_events) => {
                Arc::new(ReplayCost::new(max_events, Duration::from_secs(60)))
            }
        }
    }
}

fn strategy_kind() -> impl Strategy<Value = StrategyKind> {
    prop_oneof![
        Just(StrategyKind::Never),
        (1u64..12).prop_map(StrategyKind::EveryN),
        (0u64..300).prop_map(StrategyKind::Interval),
        (1u64..12, 0u64..300).prop_map(|(n, t)| StrategyKind::Hybrid(n, t)),
        (1u64..10, 0u64..5, 1u64..20).prop_map(|(e, min, max)| StrategyKind::Bounded(e, min, max)),
        (-50i64..200).prop_map(StrategyKind::Predicate),
        (0u64..10).prop_map(StrategyKind::ReplayCost),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Command(LedgerCommand),
    /// Passivate the actor (it may snapshot on the way out): the next command re-activates.
    Passivate,
    SnapshotNow,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (-100i64..100).prop_map(|a| Step::Command(LedgerCommand::Add(a))),
        2 => prop::collection::vec(-100i64..100, 1..6).prop_map(|v| Step::Command(LedgerCommand::AddMany(v))),
        1 => "[a-z]{0,12}".prop_map(|t| Step::Command(LedgerCommand::Note(t))),
        1 => Just(Step::Command(LedgerCommand::Overdraw)),
        1 => Just(Step::Passivate),
        1 => Just(Step::SnapshotNow),
    ]
}

fn executor(
    events: Arc<dyn aggregate_actors::event_stores::EventStore>,
    snapshots: Arc<dyn aggregate_actors::event_stores::SnapshotStore>,
    kind: &StrategyKind,
    on_passivation: bool,
) -> Executor {
    let mut settings = AggregateSettings::<Ledger>::new()
        .snapshot_on_passivation(on_passivation)
        .replay_page_size(7);
    settings.strategy = kind.build();
    Executor::builder(events, snapshots)
        .register::<Ledger>(settings)
        .build()
        .unwrap()
}

async fn check_history(
    stores: &Stores,
    id: &str,
    kind: &StrategyKind,
    on_passivation: bool,
    steps: &[Step],
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let live = executor(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        kind,
        on_passivation,
    );
    let mut model: Vec<LedgerEvent> = Vec::new();
    for step in steps {
        match step {
            Step::Command(command) => {
                let outcome = live.execute::<Ledger>(id, command.clone()).await;
                match (expected_events(command), outcome) {
                    (Some(events), Ok(committed)) => {
                        prop_assert_eq!(&committed.events, &events);
                        model.extend(events);
                        prop_assert_eq!(committed.version, model.len() as u64);
                    }
                    (None, Err(CommandError::Rejected(_))) => {}
                    (expected, outcome) => {
                        return Err(TestCaseError::fail(format!(
                            "{command:?}: expected {expected:?}, got {outcome:?}"
                        )));
                    }
                }
            }
            Step::Passivate => {
                live.passivate::<Ledger>(id).await.unwrap();
            }
            Step::SnapshotNow => match live.snapshot_now::<Ledger>(id).await {
                Ok(version) => prop_assert_eq!(version, model.len() as u64),
                Err(aggregate_actors::ExecutorError::NotFound { .. }) => {
                    prop_assert!(model.is_empty())
                }
                Err(other) => return Err(TestCaseError::fail(format!("snapshot_now: {other}"))),
            },
        }
    }
    let folded = fold(&model);
    if model.is_empty() {
        live.shutdown().await;
        return Ok(());
    }
    let live_state = live.state::<Ledger>(id).await.unwrap();
    prop_assert_eq!(&live_state.state, &folded, "live actor");
    live.shutdown().await;

    // Re-activation on the same stores: newest valid snapshot + tail.
    let reactivated = executor(
        Arc::clone(&stores.events),
        Arc::clone(&stores.snapshots),
        kind,
        false,
    );
    let view = reactivated.state::<Ledger>(id).await.unwrap();
    prop_assert_eq!(&view.state, &folded, "snapshot + tail");
    prop_assert_eq!(view.version, model.len() as u64);
    tally.record(
        kind,
        on_passivation,
        steps,
        view.activation.snapshot_version(),
    );
    let replayed_from = view.activation.snapshot_version().unwrap_or(0);
    prop_assert_eq!(
        view.activation.events_replayed,
        model.len() as u64 - replayed_from
    );
    reactivated.shutdown().await;

    // Full replay: the same events, no snapshots at all.
    let (events, empty) = stores.without_snapshots();
    let full = executor(events, empty, kind, false);
    let view = full.state::<Ledger>(id).await.unwrap();
    prop_assert_eq!(&view.state, &folded, "full replay");
    prop_assert_eq!(view.activation.events_replayed, model.len() as u64);
    full.shutdown().await;
    Ok(())
}

/// How many re-activations (of histories with events) started from a snapshot.
#[derive(Default)]
struct Tally {
    /// Histories with a strategy other than `Never`.
    with_strategy: AtomicU64,
    /// ... whose re-activation started from a snapshot.
    with_strategy_from_snapshot: AtomicU64,
    /// Histories where only the strategy could take a snapshot: not `Never`, no snapshot on
    /// passivation, no `snapshot_now` step.
    strategy_only: AtomicU64,
    /// ... whose re-activation started from a snapshot.
    strategy_only_from_snapshot: AtomicU64,
}

impl Tally {
    fn record(
        &self,
        kind: &StrategyKind,
        on_passivation: bool,
        steps: &[Step],
        snapshot_version: Option<u64>,
    ) {
        if matches!(kind, StrategyKind::Never) {
            return;
        }
        let from_snapshot = u64::from(snapshot_version.is_some());
        self.with_strategy.fetch_add(1, Ordering::Relaxed);
        self.with_strategy_from_snapshot
            .fetch_add(from_snapshot, Ordering::Relaxed);
        if !on_passivation && !steps.iter().any(|s| matches!(s, Step::SnapshotNow)) {
            self.strategy_only.fetch_add(1, Ordering::Relaxed);
            self.strategy_only_from_snapshot
                .fetch_add(from_snapshot, Ordering::Relaxed);
        }
    }

    /// Asserts that at least `min_share.0` of the histories with a snapshot strategy, and at
    /// least `min_share.1` (and at least one) of those where only the strategy could snapshot,
    /// re-activated from a snapshot.
    fn assert_snapshots_were_used(&self, min_share: (f64, f64)) {
        for (group, total, from_snapshot, min_share) in [
            (
                "histories with a snapshot strategy",
                &self.with_strategy,
                &self.with_strategy_from_snapshot,
                min_share.0,
            ),
            (
                "histories where only the strategy could snapshot",
                &self.strategy_only,
                &self.strategy_only_from_snapshot,
                min_share.1,
            ),
        ] {
            let total = total.load(Ordering::Relaxed);
            let from_snapshot = from_snapshot.load(Ordering::Relaxed);
            let share = from_snapshot as f64 / total.max(1) as f64;
            eprintln!(
                "{group}: {from_snapshot} of {total} re-activated from a snapshot ({:.0} %)",
                share * 100.0
            );
            assert!(total > 0, "no {group}: the generator is broken");
            assert!(
                from_snapshot > 0 && share >= min_share,
                "only {from_snapshot} of {total} {group} re-activated from a snapshot \
                 (< {:.0} %): snapshots were not taken or not used",
                min_share * 100.0
            );
        }
    }
}

/// `deterministic`: the same histories on every run, for a run too short for its share of
/// snapshots to be sure (see [`MIN_SHARE_FROM_SNAPSHOT_POSTGRES`]).
fn run(stores: &Stores, cases: u32, deterministic: bool) -> Tally {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = if deterministic {
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
    } else {
        TestRunner::new(config)
    };
    let case = AtomicU64::new(0);
    let tally = Tally::default();
    let history = (
        strategy_kind(),
        any::<bool>(),
        prop::collection::vec(step(), 0..40),
    );
    runner
        .run(&history, |(kind, on_passivation, steps)| {
            let id = format!("p{}", case.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(check_history(
                stores,
                &id,
                &kind,
                on_passivation,
                &steps,
                &tally,
            ))
        })
        .unwrap();
    tally
}

/// The share of re-activations that must start from a snapshot: of histories with a strategy
/// other than `Never` (about 93 % observed: half the histories also snapshot on passivation),
/// and of those where only the strategy could snapshot (50 to 66 % observed over about 115 such
/// histories per 1 000; the rest used a large `n`, few events or `ReplayCost` without a costly
/// re-activation). Both bounds sit many standard deviations below what the generator yields.
const MIN_SHARE_FROM_SNAPSHOT: (f64, f64) = (0.6, 0.3);

/// On PostgreSQL, 100 histories give only about 12 where only the strategy could snapshot: too
/// few for a share, so at least one of them must have re-activated from a snapshot. Drawn at
/// random, none would once in a few hundred runs; so this run draws the same histories every
/// time (the in-memory run, ten times larger, draws new ones).
const MIN_SHARE_FROM_SNAPSHOT_POSTGRES: (f64, f64) = (0.6, 0.0);

#[test]
fn snapshot_plus_tail_equals_full_replay_equals_fold_in_memory_1000_histories() {
    run(&crate::common::memory(), 1_000, false).assert_snapshots_were_used(MIN_SHARE_FROM_SNAPSHOT);
}

#[test]
fn snapshot_plus_tail_equals_full_replay_equals_fold_on_postgres_100_histories() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let Some(stores) = setup.block_on(crate::common::postgres()) else {
        return;
    };
    run_and_drop_in(&setup, stores, 100);
}

/// The PostgreSQL test database is dropped inside the runtime that created it.
fn run_and_drop_in(setup: &tokio::runtime::Runtime, stores: Stores, cases: u32) {
    let (stores, tally) = run_returning(stores, cases);
    setup.block_on(async move { drop(stores) });
    tally.assert_snapshots_were_used(MIN_SHARE_FROM_SNAPSHOT_POSTGRES);
}

fn run_returning(stores: Stores, cases: u32) -> (Stores, Tally) {
    let tally = run(&stores, cases, true);
    (stores, tally)
}
