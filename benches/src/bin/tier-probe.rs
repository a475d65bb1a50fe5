//! The resident tier's memory probe, a child of scenario 6 (see `benchmarks::tiers`): its own
//! binary so that its global allocator can count the heap bytes in use (the `cap` crate's
//! counting wrapper around [`Allocator`], the allocator of every benchmark binary) without
//! slowing every other scenario.

use std::io::Write;

use benchmarks::{BoxError, allocator::Allocator, tiers};
use cap::Cap;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: Cap<Allocator> = Cap::new(Allocator {}, usize::MAX);

/// Fills ledger accounts with the resident tier on or off and prints `PROBE {json}`.
#[derive(Debug, Parser)]
struct Args {
    /// The tier on (entries kept after idle passivation).
    #[arg(long, conflicts_with = "cold")]
    resident: bool,
    /// The tier off.
    #[arg(long)]
    cold: bool,
    /// Accounts to fill.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    benchmarks::install_subscriber();
    let args = Args::parse();
    if args.resident == args.cold {
        return Err("pass --resident or --cold".into());
    }
    let result = tiers::run_here(args.resident, args.count, || ALLOCATOR.allocated()).await?;
    println!("PROBE {}", serde_json::to_string(&result)?);
    std::io::stdout().flush()?;
    // Leave without tearing a million aggregates down one by one.
    std::process::exit(0);
}
