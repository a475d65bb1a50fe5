//! Scenario 4: against cqrs-es 0.5 + postgres-es 0.5 on the same PostgreSQL server.
//!
//! The same ledger domain (`LedgerState::decide` / `apply`) written for cqrs-es, two workloads,
//! both systems on the same server in the same run:
//!
//! - **warm**: 16 aggregates with a short history, one caller each, a fixed number of deposits
//!   per aggregate (fixed, not timed, so both systems end with the same histories);
//! - **cold**: the first command to each of many aggregates that have a 10-event history but
//!   are not in memory (for us: a fresh executor; cqrs-es keeps nothing in memory anyway),
//!   16 callers.
//!
//! cqrs-es runs twice: event-sourced (it loads the whole history for every command) and with
//! its snapshot store (a snapshot every 100 events). Ours runs with the default settings. The
//! work is split into rounds, the systems taking turns (backwards in every other round), and
//! each system's rounds are merged. Everything runs in two modes: on the test server (fsync
//! off) and on a durable one, when there is one.
//!
//! cqrs-es and postgres-es (with their own sqlx 0.8) are compiled only with the `cqrs-baseline`
//! feature, which the Makefile's bench targets turn on; without it the scenario reports that it
//! was not built.

use crate::BoxError;
use crate::report::Section;
use crate::scenarios::Ctx;

#[cfg(feature = "cqrs-baseline")]
mod domain;
#[cfg(feature = "cqrs-baseline")]
mod ours;
#[cfg(feature = "cqrs-baseline")]
mod report;

/// Aggregates (and callers) of the warm workload.
#[cfg(feature = "cqrs-baseline")]
const WARM_AGGREGATES: usize = 16;
/// Callers of the cold workload.
#[cfg(feature = "cqrs-baseline")]
const COLD_CALLERS: usize = 16;
/// History of every aggregate before the measured commands.
#[cfg(feature = "cqrs-baseline")]
const HISTORY: u32 = 10;
/// cqrs-es snapshot frequency.
#[cfg(feature = "cqrs-baseline")]
const CQRS_SNAPSHOT_EVERY: usize = 100;
/// Connections of each framework's pool.
#[cfg(feature = "cqrs-baseline")]
const POOL: u32 = 32;

/// Runs the scenario.
#[cfg(feature = "cqrs-baseline")]
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    imp::run(ctx).await
}

/// Reports that the scenario was not built.
#[cfg(not(feature = "cqrs-baseline"))]
pub async fn run(_ctx: &Ctx) -> Result<Section, BoxError> {
    let why = "not built: the benchmarks were compiled without the `cqrs-baseline` feature \
               (cqrs-es, postgres-es); `make bench` and `make bench-quick` turn it on";
    println!("  cqrs: {why}");
    Ok(Section::skipped(super::ALL[3].title, why))
}

/// Round `round`'s share of `count` items split into `rounds` rounds.
#[cfg(feature = "cqrs-baseline")]
fn share(count: usize, rounds: usize, round: usize) -> std::ops::Range<usize> {
    let rounds = rounds.max(1);
    (count * round / rounds)..(count * (round + 1) / rounds)
}

#[cfg(feature = "cqrs-baseline")]
mod imp {
    use std::sync::{Arc, Mutex};

    use crate::BoxError;
    use crate::figures::fmt_rate;
    use crate::measure::{Measurement, run_work_rounds};
    use crate::report::Section;
    use crate::scenarios::executor::ids;
    use crate::scenarios::{Ctx, PgMode};

    use super::WARM_AGGREGATES;
    use super::domain::{self, CqrsSide};
    use super::ours::{self, Activations, Stores};
    use super::report::{self, ModeResult, Sizes};

    /// The systems in table order; ours first.
    pub(super) const SYSTEMS: [&str; 3] = [
        "ours",
        "cqrs-es (event-sourced)",
        "cqrs-es (snapshot every 100)",
    ];

    /// Both workloads in one mode, on two fresh databases of its server.
    async fn measure_mode(mode: &PgMode, sizes: &Sizes) -> Result<ModeResult, BoxError> {
        let ours_url = mode.server.create_database("cqrs_ours").await?;
        let cqrs_url = mode.server.create_database("cqrs_es").await?;
        let theirs = CqrsSide::connect(&cqrs_url).await?;
        let stores = Stores::connect(&ours_url).await?;

        // Warm: every system's aggregates seeded first, then the deposits in rounds.
        let warm_ids = [
            ids("warm", WARM_AGGREGATES),
            ids("warm-es", WARM_AGGREGATES),
            ids("warm-snap", WARM_AGGREGATES),
        ];
        let executor = stores.executor()?;
        ours::seed(&executor, &warm_ids[0]).await?;
        domain::seed(&theirs.es, &warm_ids[1]).await?;
        domain::seed(&theirs.snap, &warm_ids[2]).await?;
        let per_round = sizes.per_caller / sizes.rounds as u64;
        let warm = run_work_rounds(
            sizes.rounds,
            &[
                ours::warm(&executor, &warm_ids[0], per_round),
                domain::warm(&theirs.es, &warm_ids[1], per_round),
                domain::warm(&theirs.snap, &warm_ids[2], per_round),
            ],
        )
        .await?;
        executor.shutdown().await;

        // Cold: every system's aggregates seeded (ours through an executor then shut down, so
        // nothing is live), then first commands in rounds.
        let cold_ids = [
            ids("cold", sizes.cold),
            ids("cold-es", sizes.cold),
            ids("cold-snap", sizes.cold),
        ];
        let seeder = stores.executor()?;
        ours::seed(&seeder, &cold_ids[0]).await?;
        seeder.shutdown().await;
        domain::seed(&theirs.es, &cold_ids[1]).await?;
        domain::seed(&theirs.snap, &cold_ids[2]).await?;
        let activations = Arc::new(Mutex::new(Activations::default()));
        let cold = run_work_rounds(
            sizes.rounds,
            &[
                ours::cold(&stores, &cold_ids[0], sizes.rounds, &activations),
                domain::cold(&theirs.es, &cold_ids[1], sizes.rounds),
                domain::cold(&theirs.snap, &cold_ids[2], sizes.rounds),
            ],
        )
        .await?;
        stores.close().await;
        theirs.close().await;

        let activations = activations.lock().map(|a| *a).unwrap_or_default();
        let named = |runs: Vec<Measurement>| -> Vec<(&'static str, Measurement)> {
            SYSTEMS.into_iter().zip(runs).collect()
        };
        let result = ModeResult {
            warm: named(warm),
            cold: named(cold),
            activations,
        };
        for (workload, runs) in [("warm", &result.warm), ("cold", &result.cold)] {
            for (system, m) in runs {
                println!(
                    "  cqrs ({}): {workload} {system}: {}",
                    mode.name,
                    fmt_rate(m.per_second())
                );
            }
        }
        Ok(result)
    }

    pub(super) async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
        let title = crate::scenarios::ALL[3].title;
        let (modes, durable_not_run) = ctx.pg_modes().await?;
        if modes.is_empty() {
            return Ok(Section::skipped(
                title,
                "no PostgreSQL (no database URL, no binaries)",
            ));
        }
        let sizes = if ctx.quick {
            Sizes {
                per_caller: 150,
                cold: 999,
                rounds: 3,
            }
        } else {
            Sizes {
                per_caller: 500,
                cold: 5_000,
                rounds: 5,
            }
        };
        let mut results = Vec::new();
        for mode in &modes {
            results.push((mode, measure_mode(mode, &sizes).await?));
        }
        Ok(report::section(
            title,
            &sizes,
            &results,
            durable_not_run.as_deref(),
        ))
    }
}
