//! Our side of scenario 4: `PgEventStore` + `PgSnapshotStore` with the default settings, and
//! the workloads as rounds of fixed work.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregate_actors::{AggregateSettings, Executor, RuntimeConfig};
use event_stores::{PgConfig, PgEventStore, PgSnapshotStore};

use crate::BoxError;
use crate::ledger::{Ledger, LedgerCommand};
use crate::measure::{WorkRound, run_jobs, run_per_caller};

use super::{COLD_CALLERS, HISTORY, POOL, WARM_AGGREGATES, share};

fn settings() -> AggregateSettings<Ledger> {
    AggregateSettings::new().runtime(RuntimeConfig {
        idle_timeout: None,
        ..RuntimeConfig::default()
    })
}

/// Our stores: one pool shared by every executor of the scenario, as an application would keep
/// one (so no run pays for opening connections).
#[derive(Clone)]
pub(super) struct Stores {
    events: PgEventStore,
    snapshots: PgSnapshotStore,
}

impl Stores {
    /// `PgConfig` defaults but the pool size (no ping before an acquire, group commit on).
    pub(super) async fn connect(url: &str) -> Result<Self, BoxError> {
        let config = PgConfig::new(url).max_connections(POOL);
        let events = PgEventStore::connect(&config).await?;
        let snapshots = PgSnapshotStore::from_pool(events.pool().clone(), config.limits).await?;
        Ok(Self { events, snapshots })
    }

    /// A new executor on the stores: nothing live.
    pub(super) fn executor(&self) -> Result<Executor, BoxError> {
        Ok(Executor::builder(
            Arc::new(self.events.clone()),
            Arc::new(self.snapshots.clone()),
        )
        .register::<Ledger>(settings())
        .build()?)
    }

    /// Closes the pool.
    pub(super) async fn close(&self) {
        self.events.close().await;
    }
}

/// Gives every id a history of [`HISTORY`] events through `executor`.
pub(super) async fn seed(executor: &Executor, ids: &Arc<Vec<String>>) -> Result<(), BoxError> {
    let executor = executor.clone();
    let ids = Arc::clone(ids);
    let count = ids.len();
    run_jobs(COLD_CALLERS, count, move |job| {
        let executor = executor.clone();
        let ids = Arc::clone(&ids);
        async move {
            executor
                .execute::<Ledger>(
                    &ids[job],
                    LedgerCommand::Import {
                        count: HISTORY,
                        amount: 5,
                    },
                )
                .await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// Warm rounds on `executor`, whose aggregates `ids` are seeded and live: `per_round`
/// deposits per aggregate, one caller each.
pub(super) fn warm(executor: &Executor, ids: &Arc<Vec<String>>, per_round: u64) -> WorkRound {
    let executor = executor.clone();
    let ids = Arc::clone(ids);
    Arc::new(move |_| {
        let executor = executor.clone();
        let ids = Arc::clone(&ids);
        Box::pin(async move {
            run_per_caller(WARM_AGGREGATES, per_round, move |caller, _| {
                let executor = executor.clone();
                let ids = Arc::clone(&ids);
                async move {
                    executor
                        .execute::<Ledger>(&ids[caller], LedgerCommand::Deposit { amount: 1 })
                        .await?;
                    Ok(())
                }
            })
            .await
        })
    })
}

/// What the cold rounds' executors measured of their activations.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Activations {
    /// Activations in all rounds.
    pub(super) count: u64,
    /// Their total time (the framework's own measure).
    pub(super) total: Duration,
    /// Events replayed by the last activation of the last round.
    pub(super) last_replayed: u64,
}

/// Cold rounds on seeded, passivated `ids`: round `r` starts a fresh executor (nothing live)
/// and sends one deposit to each id of its share, so every command activates its actor first.
pub(super) fn cold(
    stores: &Stores,
    ids: &Arc<Vec<String>>,
    rounds: usize,
    activations: &Arc<Mutex<Activations>>,
) -> WorkRound {
    let stores = stores.clone();
    let ids = Arc::clone(ids);
    let activations = Arc::clone(activations);
    Arc::new(move |round| {
        let stores = stores.clone();
        let ids = Arc::clone(&ids);
        let activations = Arc::clone(&activations);
        Box::pin(async move {
            let range = share(ids.len(), rounds, round);
            let expected = range.len() as u64;
            let executor = stores.executor()?;
            let ex = executor.clone();
            let measured = run_jobs(COLD_CALLERS, range.len(), move |job| {
                let executor = ex.clone();
                let ids = Arc::clone(&ids);
                let id = range.start + job;
                async move {
                    executor
                        .execute::<Ledger>(&ids[id], LedgerCommand::Deposit { amount: 1 })
                        .await?;
                    Ok(())
                }
            })
            .await?;
            let stats = executor
                .stats_of::<Ledger>()
                .ok_or("ledger not registered")?
                .aggregate;
            executor.shutdown().await;
            if stats.activations != expected {
                return Err(format!(
                    "cold round activated {} aggregates, expected {expected}",
                    stats.activations
                )
                .into());
            }
            if let Ok(mut acc) = activations.lock() {
                acc.count += stats.activations;
                acc.total += stats.mean_activation_time()
                    * u32::try_from(stats.activations).unwrap_or(u32::MAX);
                acc.last_replayed = stats.last_activation.map_or(0, |a| a.events_replayed);
            }
            Ok(measured)
        })
    })
}
