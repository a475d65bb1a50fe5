//! Runs only promotions from the resident tier for a profiler: fills accounts (three commands
//! each), lets them go resident, then reads batches of distinct accounts' states, waiting for
//! every actor to go idle between batches, and prints the promotion rate of the reads alone.
//! It prints `filled` when the reads begin, so a profiler can attach then (`perf record -p`).
//!
//! ```text
//! cargo build --release -p benchmarks --features jemalloc --example promo_driver
//! target/release/examples/promo_driver --accounts 1000000 --rounds 10 --batch 15000
//! ```

use std::time::{Duration, Instant};

use aggregate_actors::{
    AggregateSettings, Executor, ResidentConfig, RuntimeConfig, strategy::Never,
};
use benchmarks::BoxError;
use benchmarks::allocator::Allocator;
use benchmarks::ledger::{Ledger, LedgerCommand};
use benchmarks::measure::count_jobs;
use clap::Parser;

#[global_allocator]
static GLOBAL: Allocator = Allocator {};

/// Idle time after which an actor goes resident.
const IDLE: Duration = Duration::from_millis(200);
/// Concurrent callers.
const CALLERS: usize = 64;

/// What to drive.
#[derive(Debug, Parser)]
struct Args {
    /// Accounts filled.
    #[arg(long, default_value_t = 300_000)]
    accounts: usize,
    /// Batches of reads timed.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Distinct accounts read per batch.
    #[arg(long, default_value_t = 15_000)]
    batch: usize,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    benchmarks::install_subscriber();
    let args = Args::parse();
    let accounts = args.accounts.max(1);
    let executor = Executor::in_memory()
        .register::<Ledger>(
            AggregateSettings::new()
                .strategy(Never)
                .snapshot_on_passivation(false)
                .resident(ResidentConfig::with_budget(8 << 30))
                .runtime(RuntimeConfig {
                    idle_timeout: Some(IDLE),
                    max_live_actors: Some(20_000),
                    ..RuntimeConfig::default()
                }),
        )
        .build()?;
    let ex = executor.clone();
    count_jobs(CALLERS, accounts, move |job| {
        let ex = ex.clone();
        async move {
            for command in [
                LedgerCommand::Deposit { amount: 1_000 },
                LedgerCommand::Deposit { amount: 250 },
                LedgerCommand::Withdraw { amount: 400 },
            ] {
                ex.execute::<Ledger>(&format!("t{job}"), command).await?;
            }
            Ok(())
        }
    })
    .await?;
    let live = |executor: &Executor| executor.stats_of::<Ledger>().map_or(0, |s| s.runtime.live);
    let promotions = |executor: &Executor| {
        executor
            .stats_of::<Ledger>()
            .map_or(0, |s| s.resident.promotions)
    };
    while live(&executor) > 0 {
        tokio::time::sleep(IDLE / 4).await;
    }
    println!("filled");
    let before = promotions(&executor);
    let mut seconds = 0.0;
    let mut cpu_seconds = 0.0;
    for round in 0..args.rounds {
        while live(&executor) > 0 {
            tokio::time::sleep(IDLE / 4).await;
        }
        let ex = executor.clone();
        let first = round * args.batch;
        let started = Instant::now();
        let cpu_before = cpu_time()?;
        count_jobs(CALLERS, args.batch, move |job| {
            let ex = ex.clone();
            async move {
                ex.state::<Ledger>(&format!("t{}", (first + job) % accounts))
                    .await?;
                Ok(())
            }
        })
        .await?;
        seconds += started.elapsed().as_secs_f64();
        cpu_seconds += cpu_time()? - cpu_before;
    }
    let promoted = promotions(&executor) - before;
    println!(
        "{:.0} promotions/s ({promoted} promotions in {seconds:.2} s; {:.1} µs of CPU each, \
         the process busy {:.0} % of the time on average)",
        promoted as f64 / seconds.max(f64::MIN_POSITIVE),
        cpu_seconds * 1e6 / (promoted.max(1) as f64),
        cpu_seconds * 100.0 / seconds.max(f64::MIN_POSITIVE),
    );
    // Leave without tearing a million aggregates down one by one.
    std::process::exit(0);
}

/// User and system CPU time of this process so far, in seconds (Linux: `/proc/self/stat`, in
/// clock ticks of 10 ms, fine enough summed over a run's batches).
fn cpu_time() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12th and 13th after the name.
    let ticks = |index: usize| -> Result<f64, BoxError> {
        Ok(fields
            .get(index)
            .ok_or("short /proc/self/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
