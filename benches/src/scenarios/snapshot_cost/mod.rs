//! Scenario 5: what snapshots cost on the command path.
//!
//! The same workload (16 aggregates, one caller each, one-event deposits) with a snapshot every
//! 100 events against never, for two state sizes (the ledger account, a few hundred bytes; the
//! account with its last statement lines, about 64 KiB), on the in-memory stores and on
//! PostgreSQL. The actor encodes the state on its own turn and hands the bytes to the
//! background writer; compressing, checksumming and storing happen off the command path, but
//! share the CPU and (on PostgreSQL) the pool.
//!
//! Every run gets a fresh executor. The four runs of a round (two sizes × two strategies) go in
//! a random order (the seed is in the report), and each configuration's rounds are merged; the
//! spread over the rounds (min–max of each round's figures) is reported next to the merged
//! figure, so a difference smaller than the spread reads as noise.

mod report;

use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::strategy::{EveryNEvents, Never};
use aggregate_actors::{Aggregate, AggregateSettings, Executor, RuntimeConfig};
use event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, PgConfig, PgEventStore, PgSnapshotStore,
    SnapshotStore,
};

use crate::BoxError;
use crate::ledger::{Ledger, LedgerCommand, StatementLedger};
use crate::measure::{Measurement, Shuffler, merge_into, run_callers};
use crate::report::Section;
use crate::scenarios::Ctx;
use crate::scenarios::executor::ids;

const AGGREGATES: usize = 16;
const EVERY: u64 = 100;

/// The state sizes measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    /// The ledger account: a few hundred bytes.
    Small,
    /// The account with its last statement lines: about 64 KiB.
    Large,
}

/// One configuration: a state size and whether snapshots are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    size: Size,
    snapshots: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        size: Size::Small,
        snapshots: false,
    },
    Config {
        size: Size::Small,
        snapshots: true,
    },
    Config {
        size: Size::Large,
        snapshots: false,
    },
    Config {
        size: Size::Large,
        snapshots: true,
    },
];

fn settings<A: Aggregate>(snapshots: bool) -> AggregateSettings<A> {
    let settings = AggregateSettings::new()
        .snapshot_on_passivation(false)
        .runtime(RuntimeConfig {
            idle_timeout: None,
            ..RuntimeConfig::default()
        });
    if snapshots {
        settings.strategy(EveryNEvents::new(EVERY))
    } else {
        settings.strategy(Never)
    }
}

/// Timing of one run.
#[derive(Debug, Clone, Copy)]
struct Timing {
    warmup: Duration,
    duration: Duration,
}

/// One run of aggregate `A` on a fresh executor; returns the measurement and the snapshots
/// taken.
async fn run_one<A: Aggregate<Command = LedgerCommand>>(
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    with_snapshots: bool,
    prefix: String,
    timing: Timing,
) -> Result<(Measurement, u64), BoxError> {
    let executor = Executor::builder(events, snapshots)
        .register::<A>(settings::<A>(with_snapshots))
        .build()?;
    let ids = ids(&prefix, AGGREGATES);
    for id in ids.iter() {
        executor
            .execute::<A>(id, LedgerCommand::Deposit { amount: 1 })
            .await?;
    }
    let ex = executor.clone();
    let measured = run_callers(
        AGGREGATES,
        timing.warmup,
        timing.duration,
        move |caller, _| {
            let executor = ex.clone();
            let ids = Arc::clone(&ids);
            async move {
                executor
                    .execute::<A>(&ids[caller], LedgerCommand::Deposit { amount: 1 })
                    .await?;
                Ok(())
            }
        },
    )
    .await?;
    executor.flush_snapshots().await;
    let taken = executor
        .stats_of::<A>()
        .map_or(0, |s| s.aggregate.snapshots_taken);
    executor.shutdown().await;
    Ok((measured, taken))
}

/// One configuration's runs: merged, each round's, and the snapshots written.
#[derive(Default)]
struct Series {
    merged: Option<Measurement>,
    rounds: Vec<Measurement>,
    snapshots: u64,
}

/// A backend to measure on.
struct Backend {
    name: &'static str,
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    timing: Timing,
}

/// Every configuration on one backend, `rounds` rounds, each round in a shuffled order.
async fn measure_backend(
    backend: &Backend,
    rounds: usize,
    shuffler: &mut Shuffler,
) -> Result<Vec<Series>, BoxError> {
    let mut series: Vec<Series> = CONFIGS.iter().map(|_| Series::default()).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..CONFIGS.len()).collect();
        shuffler.shuffle(&mut order);
        for index in order {
            let config = CONFIGS[index];
            let prefix = format!("snap{}{round}", config.snapshots);
            let (events, snapshots) = (Arc::clone(&backend.events), Arc::clone(&backend.snapshots));
            let (m, taken) = match config.size {
                Size::Small => {
                    run_one::<Ledger>(events, snapshots, config.snapshots, prefix, backend.timing)
                        .await?
                }
                Size::Large => {
                    run_one::<StatementLedger>(
                        events,
                        snapshots,
                        config.snapshots,
                        prefix,
                        backend.timing,
                    )
                    .await?
                }
            };
            let slot = &mut series[index];
            slot.rounds.push(m.clone());
            merge_into(&mut slot.merged, m)?;
            slot.snapshots += taken;
        }
    }
    Ok(series)
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let rounds = if ctx.quick { 3 } else { 5 };
    let (memory_slice, pg_slice, warmup) = if ctx.quick {
        (
            Duration::from_millis(400),
            Duration::from_millis(600),
            Duration::from_millis(100),
        )
    } else {
        (
            Duration::from_millis(1_000),
            Duration::from_millis(1_500),
            Duration::from_millis(300),
        )
    };
    let mut backends = vec![Backend {
        name: "in-memory",
        events: Arc::new(InMemoryEventStore::new()),
        snapshots: Arc::new(InMemorySnapshotStore::new()),
        timing: Timing {
            warmup,
            duration: memory_slice,
        },
    }];
    let mut pg_events = None;
    let mut missing = None;
    if let Some(pg) = &ctx.pg {
        let url = pg.create_database("snapshot_cost").await?;
        let config = PgConfig::new(url).max_connections(32);
        let events = PgEventStore::connect(&config).await?;
        let snapshots = PgSnapshotStore::from_pool(events.pool().clone(), config.limits).await?;
        pg_events = Some(events.clone());
        backends.push(Backend {
            name: "PostgreSQL",
            events: Arc::new(events),
            snapshots: Arc::new(snapshots),
            timing: Timing {
                warmup,
                duration: pg_slice,
            },
        });
    } else {
        missing =
            Some("PostgreSQL: not measured (no database URL and no PostgreSQL binaries).".into());
    }

    let seed = Shuffler::clock_seed();
    let mut shuffler = Shuffler::new(seed);
    let mut results = Vec::new();
    for backend in &backends {
        let series = measure_backend(backend, rounds, &mut shuffler).await?;
        results.push((backend.name, backend.timing, series));
    }
    if let Some(events) = pg_events {
        events.close().await;
    }
    let mut section = report::section(rounds, seed, &results).await?;
    section.notes.extend(missing);
    Ok(section)
}
