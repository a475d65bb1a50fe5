//! Runs only one side of scenario 1 for a profiler: `Executor::execute` of one-event deposits
//! on the in-memory store (or, with `--raw`, the raw ractor counter baseline; with `--hand`, the
//! hand-written ledger on an in-memory store of its own), round-robin over
//! the aggregates, for a number of seconds, then prints the rate.
//!
//! ```text
//! cargo build --release -p benchmarks --features jemalloc --example s1_driver
//! perf record -g -- target/release/examples/s1_driver --aggregates 10000 --callers 64
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aggregate_actors::Executor;
use benchmarks::BoxError;
use benchmarks::allocator::Allocator;
use benchmarks::baseline::{call_counter, call_hand_ledger, spawn_counter};
use benchmarks::ledger::{Ledger, LedgerCommand};
use benchmarks::scenarios::executor::{activate_all, command_path_settings, hand_accounts, ids};
use clap::Parser;

#[global_allocator]
static GLOBAL: Allocator = Allocator {};

/// What to drive.
#[derive(Debug, Parser)]
struct Args {
    /// Live aggregates (or raw actors).
    #[arg(long, default_value_t = 1)]
    aggregates: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 1)]
    callers: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Drive the raw ractor counter actors instead.
    #[arg(long)]
    raw: bool,
    /// Drive the hand-written ledger accounts instead.
    #[arg(long, conflicts_with = "raw")]
    hand: bool,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    benchmarks::install_subscriber();
    let args = Args::parse();
    let aggregates = args.aggregates.max(1);
    let executor = Executor::in_memory()
        .register::<Ledger>(command_path_settings())
        .build()?;
    let ids = ids("acc", aggregates);
    activate_all(&executor, &ids).await?;
    let raw = if args.raw {
        let mut refs = Vec::with_capacity(aggregates);
        for _ in 0..aggregates {
            refs.push(spawn_counter().await?);
        }
        Some(Arc::new(refs))
    } else {
        None
    };
    let hand = if args.hand {
        Some(Arc::new(hand_accounts(aggregates).await?))
    } else {
        None
    };
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::with_capacity(args.callers);
    for caller in 0..args.callers {
        let (executor, ids, done, raw, hand) = (
            executor.clone(),
            Arc::clone(&ids),
            Arc::clone(&done),
            raw.clone(),
            hand.clone(),
        );
        let callers = args.callers;
        tasks.push(tokio::spawn(async move {
            let mut calls = 0usize;
            while Instant::now() < deadline {
                let index = (caller + calls * callers) % ids.len();
                match (&raw, &hand) {
                    (Some(refs), _) => {
                        call_counter(&refs[index], 1).await?;
                    }
                    (None, Some(refs)) => {
                        call_hand_ledger(&refs[index], LedgerCommand::Deposit { amount: 1 })
                            .await?;
                    }
                    (None, None) => {
                        executor
                            .execute::<Ledger>(&ids[index], LedgerCommand::Deposit { amount: 1 })
                            .await?;
                    }
                }
                calls += 1;
            }
            done.fetch_add(calls as u64, Ordering::Relaxed);
            Ok::<(), BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let side = if args.raw {
        "raw ractor calls"
    } else if args.hand {
        "hand-written commands"
    } else {
        "commands"
    };
    let done = done.load(Ordering::Relaxed);
    // The count too, so that instruction counts (callgrind) can be divided per call.
    println!(
        "{:.0} {side}/s ({done} in {} s)",
        done as f64 / args.seconds.max(1) as f64,
        args.seconds
    );
    // Leave without tearing the store down, so a profile shows only the calls.
    std::process::exit(0);
}
