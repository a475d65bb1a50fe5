//! The benchmark binary: runs the scenarios, prints a table per scenario and writes
//! `benches/REPORT.md` and `benches/recovery.svg`.
//!
//! ```text
//! cargo run --release -p benchmarks [--features cqrs-baseline,jemalloc] -- [--quick] [--only SCENARIO[,…]]
//!     [--database-url URL] [--durable-database-url URL]
//! ```
//!
//! Without a database URL (flag or `DATABASE_URL`) the PostgreSQL scenarios are reported as not
//! run; without a durable one (flag or `DURABLE_DATABASE_URL`) the durable mode of scenarios 3
//! and 4 is. `make bench` / `make bench-quick` start a throw-away cluster of each kind for the
//! run (`benches/run.sh`).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use benchmarks::allocator::Allocator;
use benchmarks::figures::fmt_duration;
use benchmarks::pg::PgServer;
use benchmarks::report::{RunInfo, Section, render};
use benchmarks::scenarios::{self, ALL, Ctx};
use benchmarks::{BoxError, probe};
use clap::Parser;

/// Benchmarks of the workspace, each measured side by side with a baseline.
#[derive(Debug, Parser)]
#[command(name = "benchmarks")]
struct Args {
    /// Shorter runs and smaller sizes (finishes in under three minutes).
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (comma-separated): executor, recovery, durable, cqrs,
    /// snapshot-cost, scale, codec, cluster, projections, snapshot-ops.
    #[arg(long, value_name = "SCENARIO")]
    only: Option<String>,
    /// PostgreSQL server for the PostgreSQL scenarios (a database per scenario is created on it
    /// and dropped at the end).
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// A durable PostgreSQL server (fsync, synchronous_commit and full_page_writes on) for the
    /// second mode of scenarios 3 and 4.
    #[arg(long, env = "DURABLE_DATABASE_URL", value_name = "URL")]
    durable_database_url: Option<String>,
    /// Where REPORT.md and recovery.svg go (default: the benches/ folder).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Internal: run a memory probe in this process and print its result.
    #[arg(long, hide = true)]
    probe: Option<String>,
    /// Internal: actors for the probe.
    #[arg(long, hide = true, default_value_t = 100_000)]
    count: u64,
}

#[global_allocator]
static GLOBAL: Allocator = Allocator {};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    benchmarks::install_subscriber();
    let args = Args::parse();
    if let Some(kind) = &args.probe {
        let result = probe::run_here(kind, args.count).await?;
        println!("PROBE {}", serde_json::to_string(&result)?);
        std::io::stdout().flush()?;
        // Leave without tearing a million actors down one by one.
        std::process::exit(0);
    }
    run(args).await
}

async fn run(args: Args) -> Result<(), BoxError> {
    let started = Instant::now();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let selected: Vec<&str> = match &args.only {
        Some(only) => only.split(',').map(str::trim).collect(),
        None => ALL.iter().map(|s| s.name).collect(),
    };
    for name in &selected {
        if !ALL.iter().any(|s| s.name == *name) {
            let names: Vec<_> = ALL.iter().map(|s| s.name).collect();
            return Err(format!("unknown scenario {name:?}; one of {names:?}").into());
        }
    }

    let pg = match &args.database_url {
        Some(url) if !url.is_empty() => Some(Arc::new(PgServer::connect(url).await?)),
        _ => None,
    };
    let postgres = match &pg {
        Some(server) => server.describe().await?,
        None => "none (no DATABASE_URL): PostgreSQL scenarios not run".to_owned(),
    };
    let durable_pg: Result<Arc<PgServer>, String> = match &args.durable_database_url {
        Some(url) if !url.is_empty() => match PgServer::connect(url).await {
            Ok(server) => Ok(Arc::new(server)),
            Err(error) => Err(format!("the durable server did not answer: {error}")),
        },
        _ => Err(scenarios::NO_DURABLE_URL.to_owned()),
    };
    let postgres_durable = match &durable_pg {
        Ok(server) => server.describe().await?,
        Err(why) => format!("none: {why}"),
    };
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    std::fs::create_dir_all(&out_dir)?;
    let ctx = Ctx {
        quick: args.quick,
        pg: pg.clone(),
        durable_pg: durable_pg.clone(),
        out_dir: out_dir.clone(),
    };
    let mode = if args.quick { "quick" } else { "full" };
    println!(
        "benchmarks ({mode} mode), {} CPUs, PostgreSQL: {postgres}; durable: {postgres_durable}",
        cpus()
    );

    let mut sections = Vec::new();
    let mut failures = Vec::new();
    for scenario in ALL.iter().filter(|s| selected.contains(&s.name)) {
        println!("\n--- {} ---", scenario.title);
        let t0 = Instant::now();
        let outcome = match scenario.name {
            "executor" => scenarios::executor::run(&ctx).await,
            "recovery" => scenarios::recovery::run(&ctx).await,
            "durable" => scenarios::durable::run(&ctx).await,
            "cqrs" => scenarios::cqrs::run(&ctx).await,
            "snapshot-cost" => scenarios::snapshot_cost::run(&ctx).await,
            "scale" => scenarios::scale::run(&ctx).await,
            "codec" => scenarios::codec::run(&ctx).await,
            "cluster" => scenarios::cluster::run(&ctx).await,
            "projections" => scenarios::projections::run(&ctx).await,
            "snapshot-ops" => scenarios::snapshot_ops::run(&ctx).await,
            other => Err(format!("no runner for {other}").into()),
        };
        let section = match outcome {
            Ok(mut section) => {
                section.notes.push(format!(
                    "Scenario wall time: {}.",
                    fmt_duration(t0.elapsed())
                ));
                section
            }
            Err(error) => {
                eprintln!("scenario {} failed: {error}", scenario.name);
                failures.push(format!("{}: {error}", scenario.name));
                Section::skipped(scenario.title, format!("failed: {error}"))
            }
        };
        print!("{}", section.text());
        sections.push(section);
    }
    for server in pg.iter().chain(durable_pg.as_ref().ok()) {
        if let Err(error) = server.drop_created().await {
            eprintln!("could not drop the benchmark databases: {error}");
        }
    }

    let mut command = String::from("cargo run --release -p benchmarks");
    let features: Vec<&str> = [
        ("cqrs-baseline", cfg!(feature = "cqrs-baseline")),
        ("jemalloc", cfg!(feature = "jemalloc")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if !features.is_empty() {
        command.push_str(" --features ");
        command.push_str(&features.join(","));
    }
    command.push_str(" --");
    if args.quick {
        command.push_str(" --quick");
    }
    if let Some(only) = &args.only {
        command.push_str(&format!(" --only {only}"));
    }
    let info = RunInfo {
        mode: mode.to_owned(),
        date,
        cpus: cpus(),
        cpu_model: cpu_model(),
        memory: memory(),
        allocator: benchmarks::allocator::NAME.to_owned(),
        postgres,
        postgres_durable,
        only: args.only.clone(),
        wall_time: fmt_duration(started.elapsed()),
        command,
    };
    let report = out_dir.join("REPORT.md");
    std::fs::write(&report, render(&info, &sections))?;
    println!("\nwrote {} in {}", report.display(), info.wall_time);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} scenario(s) failed: {}",
            failures.len(),
            failures.join("; ")
        )
        .into())
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown model".to_owned())
}

fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} GiB", kb / (1024.0 * 1024.0)),
        )
}
