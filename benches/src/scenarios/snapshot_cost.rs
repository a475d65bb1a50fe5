//! Scenario 5: what snapshots cost on the command path.
//!
//! The same workload (16 aggregates, one caller each, one-event deposits) with a snapshot every
//! 100 events against never, on the in-memory stores and on PostgreSQL. The actor encodes the
//! state on its own turn and hands the bytes to the background writer; compressing, checksumming
//! and storing happen off the command path, but share the CPU and (on PostgreSQL) the pool.
//! Runs alternate between the two strategies (never, every 100, never, every 100 …) and
//! each strategy's histograms are merged, so drift in the machine's load hits both alike.

use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::strategy::{EveryNEvents, Never};
use aggregate_actors::{AggregateSettings, Executor, RuntimeConfig};
use event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, PgConfig, PgEventStore, PgSnapshotStore,
    SnapshotStore,
};

use crate::BoxError;
use crate::ledger::{Ledger, LedgerCommand, LedgerState, seeded_event};
use crate::measure::{
    Measurement, fmt_count, fmt_duration, fmt_rate, fmt_ratio, ratio, run_callers,
};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;
use crate::scenarios::executor::{activate_all, ids};

const AGGREGATES: usize = 16;
const EVERY: u64 = 100;

fn settings(snapshots: bool) -> AggregateSettings<Ledger> {
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

/// One run; returns the measurement and the snapshots taken.
async fn measure(
    ctx: &Ctx,
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    with_snapshots: bool,
    round: usize,
    duration: Duration,
) -> Result<(Measurement, u64), BoxError> {
    let executor = Executor::builder(events, snapshots)
        .register::<Ledger>(settings(with_snapshots))
        .build()?;
    let ids = ids(&format!("snap{with_snapshots}{round}"), AGGREGATES);
    activate_all(&executor, &ids).await?;
    let ex = executor.clone();
    let measured = run_callers(AGGREGATES, ctx.warmup(), duration, move |caller, _| {
        let executor = ex.clone();
        let ids = Arc::clone(&ids);
        async move {
            executor
                .execute::<Ledger>(&ids[caller], LedgerCommand::Deposit { amount: 1 })
                .await?;
            Ok(())
        }
    })
    .await?;
    executor.flush_snapshots().await;
    let taken = executor
        .stats_of::<Ledger>()
        .map_or(0, |s| s.aggregate.snapshots_taken);
    executor.shutdown().await;
    Ok((measured, taken))
}

/// A backend to measure on: name, stores, measured duration.
type Backend = (
    &'static str,
    Arc<dyn EventStore>,
    Arc<dyn SnapshotStore>,
    Duration,
);

struct Pair {
    never: Measurement,
    every: Measurement,
    snapshots: u64,
}

async fn measure_pair(
    ctx: &Ctx,
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    duration: Duration,
) -> Result<Pair, BoxError> {
    let rounds = if ctx.quick { 2 } else { 3 };
    let mut never: Option<Measurement> = None;
    let mut every: Option<Measurement> = None;
    let mut taken = 0;
    for round in 0..rounds {
        for with_snapshots in [false, true] {
            let (m, t) = measure(
                ctx,
                Arc::clone(&events),
                Arc::clone(&snapshots),
                with_snapshots,
                round,
                duration / rounds as u32,
            )
            .await?;
            let slot = if with_snapshots {
                &mut every
            } else {
                &mut never
            };
            *slot = Some(match slot.take() {
                None => m,
                Some(mut acc) => {
                    acc.latency.add(&m.latency)?;
                    acc.ops += m.ops;
                    acc.elapsed += m.elapsed;
                    acc
                }
            });
            taken += t;
        }
    }
    match (never, every) {
        (Some(never), Some(every)) => Ok(Pair {
            never,
            every,
            snapshots: taken,
        }),
        _ => Err("no rounds ran".into()),
    }
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let mut section = Section::new(
        super::ALL[4].title,
        format!(
            "{AGGREGATES} aggregates, one caller each, one-event deposits; strategy \
             `EveryNEvents({EVERY})` against `Never` (no passivation snapshots), alternating \
             runs merged per strategy. The ledger state (balance, counters, the last 16 \
             transactions) encodes to a few hundred bytes, as a real account's would."
        ),
    );
    let mut backends: Vec<Backend> = vec![(
        "in-memory",
        Arc::new(InMemoryEventStore::new()),
        Arc::new(InMemorySnapshotStore::new()),
        ctx.duration() * 2,
    )];
    let mut pg_events = None;
    if let Some(pg) = &ctx.pg {
        let url = pg.create_database("snapshot_cost").await?;
        let config = PgConfig::new(url).max_connections(32);
        let events = PgEventStore::connect(&config).await?;
        let snapshots = PgSnapshotStore::from_pool(events.pool().clone(), config.limits).await?;
        pg_events = Some(events.clone());
        backends.push((
            "PostgreSQL",
            Arc::new(events),
            Arc::new(snapshots),
            ctx.pg_duration() * 2,
        ));
    } else {
        section
            .notes
            .push("PostgreSQL: not measured (no database URL and no PostgreSQL binaries).".into());
    }

    let mut table = Table::new(
        "",
        &[
            "backend",
            "strategy",
            "cmd/s",
            "p50",
            "p99",
            "p99.9",
            "snapshots written",
            "p99 ÷ never",
        ],
    );
    let mut results = Vec::new();
    for (name, events, snapshots, duration) in backends {
        let pair = measure_pair(ctx, events, snapshots, duration).await?;
        let r = ratio(
            pair.every.p99().as_secs_f64(),
            pair.never.p99().as_secs_f64(),
        );
        println!(
            "  snapshot-cost: {name}: p99 never {} vs every {EVERY} {}",
            fmt_duration(pair.never.p99()),
            fmt_duration(pair.every.p99())
        );
        for (strategy, m, snaps) in [
            ("never", &pair.never, 0),
            ("every 100 events", &pair.every, pair.snapshots),
        ] {
            table.row(vec![
                name.into(),
                strategy.into(),
                fmt_rate(m.per_second()),
                fmt_duration(m.p50()),
                fmt_duration(m.p99()),
                fmt_duration(m.quantile(0.999)),
                fmt_count(snaps),
                if snaps == 0 {
                    "–".into()
                } else {
                    fmt_ratio(r)
                },
            ]);
        }
        results.push((name, pair, r));
    }
    if let Some(events) = pg_events {
        events.close().await;
    }
    section.tables.push(table);

    // What the actor itself pays per snapshot: encoding the state.
    let mut state = LedgerState::default();
    for i in 0..1_000 {
        state.apply(&seeded_event(i));
    }
    let encoded_len = aggregate_actors::codec::encode(&state)?.len();
    let encode = crate::measure::run_callers(
        1,
        Duration::ZERO,
        Duration::from_millis(200),
        move |_, _| {
            let state = state.clone();
            async move {
                std::hint::black_box(aggregate_actors::codec::encode(&state)?);
                Ok(())
            }
        },
    )
    .await?
    .mean();

    section.ratio_line = format!(
        "Ratio (p99 with a snapshot every {EVERY} events ÷ p99 without): {}.",
        results
            .iter()
            .map(|(name, _, r)| format!("{name} {}", fmt_ratio(*r)))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if let Some((name, pair, r)) = results.last() {
        section.headline = Some(Headline {
            scenario: section.title.clone(),
            metric: format!("p99 command latency, {name}, {AGGREGATES} aggregates"),
            ours: format!("{} (every {EVERY})", fmt_duration(pair.every.p99())),
            baseline: "same, snapshots never".into(),
            baseline_figure: fmt_duration(pair.never.p99()),
            ratio: format!("{} ↓", fmt_ratio(*r)),
        });
    }
    section.notes.push(format!(
        "On the actor's turn a snapshot costs one MessagePack encode of the state ({} bytes, {} \
         mean), once per {EVERY} commands; compression, checksum and the store write run on the \
         background writer. Differences in p99 smaller than the run-to-run noise (compare the \
         two `never` figures across runs of this report) are not a cost.",
        encoded_len,
        fmt_duration(encode)
    ));
    Ok(section)
}
