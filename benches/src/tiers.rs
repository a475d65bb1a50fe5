//! Probes of the resident tier (scenario 6): memory per resident aggregate and promotions per
//! second, each against the same work with the tier off (cold aggregates, activated from the
//! in-memory store), in child processes like the other memory probes ([`crate::probe`]).
//!
//! A child (the `tier-probe` binary, whose global allocator counts the bytes in use) fills
//! `count` ledger accounts with three commands each (deposit, deposit, withdraw: three events,
//! a state with three recent transactions, three command ids in the window). Actors passivate
//! after [`IDLE`] without traffic, or are evicted beyond [`HOT_CAP`] live ones: resident with
//! the tier on, dropped (cold) with it off. Once
//! none is live, it reads the heap bytes in use and the RSS. Both children store the same events
//! in the same in-memory store, so the difference of their heap growth is what the resident
//! entries take. Then it reads accounts' states with 64 callers, in batches of [`READ_BATCH`]
//! distinct accounts with every actor passivated between batches: a promotion from the tier
//! with no store read, or an activation from the store (snapshot lookup and stream read) with
//! it off, and nothing else running beside them.

use std::time::{Duration, Instant};

use aggregate_actors::{
    AggregateSettings, Executor, ResidentConfig, RuntimeConfig, strategy::Never,
};
use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::ledger::{Ledger, LedgerCommand};
use crate::measure::count_jobs;
use crate::probe::rss_bytes;

/// Idle time after which a hot actor passivates (to resident, or to cold with the tier off).
pub const IDLE: Duration = Duration::from_millis(1_000);
/// Accounts read per timed batch (below [`HOT_CAP`]), and batches at most.
pub const READ_BATCH: usize = 15_000;
const READ_BATCHES: usize = 12;
/// Live actors at most (the hot tier's bound); beyond it the least recently used is evicted,
/// to resident or cold like an idle one. It bounds the transient memory of the fill, so the
/// RSS reflects what stays.
pub const HOT_CAP: usize = 20_000;
/// Concurrent callers.
const CALLERS: usize = 64;
/// Accounts filled before the first RSS reading, so one-time allocations are not counted.
const WARMUP: usize = 2_000;

/// What one child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierProbe {
    /// The tier was on.
    pub resident: bool,
    /// Accounts filled between the two readings.
    pub count: u64,
    /// RSS growth over the fill, bytes.
    pub rss_growth: u64,
    /// Growth of the heap bytes in use over the fill (the allocator's count).
    pub heap_growth: u64,
    /// The whole process's RSS after the fill, bytes.
    pub rss_total: u64,
    /// Resident entries after the fill, and the bytes the tier charged them.
    pub resident_entries: u64,
    /// Bytes the tier's budget counted for them.
    pub resident_bytes: u64,
    /// Activations during those reads, and of them promotions from the tier.
    pub read_activations: u64,
    /// Of those activations, promotions from the resident tier.
    pub read_promotions: u64,
    /// Each batch's activations per second, in the order they ran.
    pub batch_rates: Vec<f64>,
}

impl TierProbe {
    /// Activations (promotions or store activations) per second while reading: the median of
    /// the batches' rates, so that one batch slowed by something else on a shared machine does
    /// not move the figure (each batch is a fraction of a second).
    pub fn activations_per_second(&self) -> f64 {
        let mut rates = self.batch_rates.clone();
        rates.sort_by(f64::total_cmp);
        match rates.len() {
            0 => 0.0,
            n if n % 2 == 1 => rates[n / 2],
            n => (rates[n / 2 - 1] + rates[n / 2]) / 2.0,
        }
    }
}

/// The child's side of a tier probe; `heap` reads the heap bytes in use.
pub async fn run_here(
    resident: bool,
    count: u64,
    heap: impl Fn() -> usize,
) -> Result<TierProbe, BoxError> {
    let count_usize = usize::try_from(count)?;
    let tier = if resident {
        ResidentConfig::with_budget(8 << 30)
    } else {
        ResidentConfig::off()
    };
    let executor = Executor::in_memory()
        .register::<Ledger>(
            AggregateSettings::new()
                .strategy(Never)
                .snapshot_on_passivation(false)
                .resident(tier)
                .runtime(RuntimeConfig {
                    idle_timeout: Some(IDLE),
                    max_live_actors: Some(HOT_CAP),
                    ..RuntimeConfig::default()
                }),
        )
        .build()?;
    let fill = |offset: usize| {
        let executor = executor.clone();
        move |job: usize| {
            let executor = executor.clone();
            async move {
                let id = format!("t{}", offset + job);
                for command in [
                    LedgerCommand::Deposit { amount: 1_000 },
                    LedgerCommand::Deposit { amount: 250 },
                    LedgerCommand::Withdraw { amount: 400 },
                ] {
                    executor.execute::<Ledger>(&id, command).await?;
                }
                Ok(())
            }
        }
    };
    count_jobs(CALLERS, WARMUP, fill(0)).await?;
    until_none_live(&executor).await?;
    let (before, heap_before) = (rss_bytes()?, heap());
    count_jobs(CALLERS, count_usize, fill(WARMUP)).await?;
    until_none_live(&executor).await?;
    let (after, heap_after) = (rss_bytes()?, heap());
    let filled = executor
        .stats_of::<Ledger>()
        .ok_or("ledger not registered")?;

    // Batches of distinct accounts, each smaller than the hot cap and over well before the
    // idle timeout, with every actor passivated between them: what is timed is promotions
    // (or store activations) alone, with no eviction and no demotion running beside them.
    let batches = (count_usize / READ_BATCH).clamp(1, READ_BATCHES);
    let mut batch_rates = Vec::with_capacity(batches);
    for batch in 0..batches {
        let activations_before = executor
            .stats_of::<Ledger>()
            .ok_or("ledger not registered")?
            .runtime
            .activations;
        let first = WARMUP + batch * READ_BATCH;
        let read = {
            let executor = executor.clone();
            move |job: usize| {
                let executor = executor.clone();
                async move {
                    let view = executor
                        .state::<Ledger>(&format!("t{}", first + job))
                        .await?;
                    if view.state.balance != 850 {
                        return Err(format!("balance {} instead of 850", view.state.balance).into());
                    }
                    Ok(())
                }
            }
        };
        let started = Instant::now();
        count_jobs(CALLERS, READ_BATCH.min(count_usize), read).await?;
        let seconds = started.elapsed().as_secs_f64();
        let activations = executor
            .stats_of::<Ledger>()
            .ok_or("ledger not registered")?
            .runtime
            .activations
            - activations_before;
        batch_rates.push(activations as f64 / seconds.max(f64::MIN_POSITIVE));
        until_none_live(&executor).await?;
    }
    let read_done = executor
        .stats_of::<Ledger>()
        .ok_or("ledger not registered")?;
    Ok(TierProbe {
        resident,
        count,
        rss_growth: after.saturating_sub(before),
        heap_growth: heap_after.saturating_sub(heap_before) as u64,
        rss_total: after,
        resident_entries: filled.resident.entries as u64,
        resident_bytes: filled.resident.bytes as u64,
        read_activations: read_done.runtime.activations - filled.runtime.activations,
        read_promotions: read_done.resident.promotions - filled.resident.promotions,
        batch_rates,
    })
}

/// Waits until every actor has passivated (at most a minute).
async fn until_none_live(executor: &Executor) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = executor
            .stats_of::<Ledger>()
            .ok_or("ledger not registered")?
            .runtime
            .live;
        if live == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{live} actors still live a minute after the fill").into());
        }
        tokio::time::sleep(IDLE / 5).await;
    }
}

/// Runs a tier probe in a child process: the `tier-probe` binary next to this one, with
/// `--resident` or `--cold` and `--count N`.
pub async fn run_in_child(resident: bool, count: u64) -> Result<TierProbe, BoxError> {
    let exe = std::env::current_exe()?.with_file_name("tier-probe");
    let output = tokio::process::Command::new(&exe)
        .arg(if resident { "--resident" } else { "--cold" })
        .arg("--count")
        .arg(count.to_string())
        .output()
        .await
        .map_err(|e| {
            format!(
                "{} (build it with `cargo build --release -p benchmarks`): {e}",
                exe.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "tier probe failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .ok_or_else(|| format!("tier probe printed no result: {stdout}"))?;
    Ok(serde_json::from_str(line)?)
}
