//! `sample-app`: the ledger service's command line (`demo`, `serve`, `inspect`,
//! `cluster-demo`, `backup`).

use std::error::Error;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand};
use sample_app::backup::BackupCommand;
use sample_app::cluster::ClusterOptions;
use sample_app::cluster_demo::{self, ClusterDemoOptions};
use sample_app::demo::{self, DemoOptions};
use sample_app::domain::ReviewPolicy;
use sample_app::http::{self, ServeOptions};
use sample_app::inspect;
use sample_app::ledger::Stores;
use sample_app::snapshot_cli::SnapshotsCommand;
use tracing_subscriber::EnvFilter;

/// A ledger service on aggregate-actors: accounts and customers as event-sourced virtual actors.
#[derive(Debug, Parser)]
#[command(name = "sample-app", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a realistic workload, then compare activation from snapshots with full replay.
    Demo {
        /// Number of accounts (customers are half as many).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        accounts: u64,
        /// Number of commands, setup included.
        #[arg(long, default_value_t = 20_000)]
        commands: usize,
        /// Commands in flight at once.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        concurrency: u64,
        /// Seed of the random workload.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// PostgreSQL URL; in-memory stores when absent.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// PostgreSQL pool size.
        #[arg(long, default_value_t = 16)]
        max_connections: u32,
        /// How long the reminders section's accounts stay frozen before their automatic
        /// review (a whole number with ms, s, m, h or d); the workload's accounts keep 30d.
        #[arg(long, default_value = "200ms")]
        review_frozen_after: ReviewPolicy,
    },
    /// Serve the HTTP API until Ctrl-C or SIGTERM.
    Serve {
        /// Address to listen on (port 0 picks a free one; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// PostgreSQL URL; in-memory stores when absent.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// PostgreSQL pool size.
        #[arg(long, default_value_t = 16)]
        max_connections: u32,
        /// How long an account may stay frozen before its automatic review is requested (a
        /// whole number with ms, s, m, h or d: 500ms, 2s, 30d). With --cluster, each node
        /// fires the reviews of the accounts whose shards it owns; every node should be given
        /// the same value.
        #[arg(long, default_value = "30d")]
        review_frozen_after: ReviewPolicy,
        /// Join a cluster of `serve` processes sharing the aggregates through the same
        /// PostgreSQL database (needs --database-url or DATABASE_URL).
        #[arg(long)]
        cluster: bool,
        /// With --cluster: where to listen for calls forwarded by the other nodes (HTTP/2;
        /// port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0", requires = "cluster")]
        cluster_listen: SocketAddr,
        /// With --cluster: the address (host:port) the other nodes reach this node's cluster
        /// listener at [default: the bound --cluster-listen address].
        #[arg(long, env = "LEDGER_ADVERTISE")]
        advertise: Option<String>,
        /// With --cluster: most shards handed to other nodes per heartbeat (1 s) when nodes
        /// join, so that a join moves load gradually.
        #[arg(long, default_value_t = ClusterOptions::new().max_releases_per_tick,
              value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000),
              requires = "cluster")]
        cluster_max_releases_per_tick: usize,
        /// Snapshot settings per aggregate type from a file (TOML, or JSON when it ends in
        /// .json; see sample-app/snapshots.toml), applied over the built-in ones.
        #[arg(long, env = "LEDGER_SNAPSHOT_CONFIG")]
        snapshot_config: Option<std::path::PathBuf>,
    },
    /// Start a cluster of `serve --cluster` nodes on one PostgreSQL database, load it, kill a
    /// node with SIGKILL mid-load, then audit in SQL that every acknowledged command was stored
    /// exactly once.
    ClusterDemo {
        /// PostgreSQL URL (the nodes' shared database).
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Number of nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=9))]
        nodes: u64,
        /// Number of accounts.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        accounts: u64,
        /// Clients sending commands at once.
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=1_000))]
        concurrency: u64,
        /// Milliseconds of load before the kill.
        #[arg(long, default_value_t = 4_000)]
        kill_after_ms: u64,
        /// Milliseconds of load after every aggregate of the killed node answered again.
        #[arg(long, default_value_t = 3_000)]
        load_after_recovery_ms: u64,
        /// Seed of the load (and of which node is killed).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// PostgreSQL pool size of each node.
        #[arg(long, default_value_t = 8)]
        max_connections: u32,
        /// RUST_LOG of the nodes (their logs go to stderr, prefixed with the node); `warn`
        /// shows each command whose answer the kill cut off.
        #[arg(long, default_value = "error")]
        node_log: String,
    },
    /// Print the events and snapshots of one aggregate, decoded and verified.
    Inspect {
        /// PostgreSQL URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// `accounts` or `customers` (or `account` / `customer`).
        aggregate_type: String,
        /// The aggregate id.
        id: String,
    },
    /// Export events and snapshots to a backup file, or import one (verified before anything
    /// is written).
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Snapshot aggregates in bulk (every aggregate of a type, or some ids), with a progress
    /// bar.
    Snapshots {
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
}

/// Logs go to stderr (stdout carries the demo's table and serve's address), filtered by
/// RUST_LOG, or `default` when it is unset.
fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Prints a demo's report; the exit code says whether its checks passed.
fn verdict(report: &str, passed: bool) -> ExitCode {
    print!("{report}");
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(error) => {
            // For people, not the Debug form; the messages carry their causes.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Box<dyn Error>> {
    match command {
        Command::Demo {
            accounts,
            commands,
            concurrency,
            seed,
            database_url,
            max_connections,
            review_frozen_after,
        } => {
            // Warnings only: info lines would tear the progress bar.
            init_logging("warn");
            let report = demo::run(DemoOptions {
                accounts: usize::try_from(accounts)?,
                commands,
                concurrency: usize::try_from(concurrency)?,
                seed,
                database_url,
                max_connections,
                progress: std::io::stderr().is_terminal(),
                review_frozen_after,
            })
            .await?;
            Ok(verdict(&report.render(), report.passed()))
        }
        Command::Serve {
            listen,
            database_url,
            max_connections,
            review_frozen_after,
            cluster,
            cluster_listen,
            advertise,
            cluster_max_releases_per_tick,
            snapshot_config,
        } => {
            init_logging("info");
            let cluster = cluster.then_some(ClusterOptions {
                listen: cluster_listen,
                advertise,
                max_releases_per_tick: cluster_max_releases_per_tick,
            });
            http::serve(ServeOptions {
                listen,
                database_url,
                max_connections,
                review_frozen_after,
                cluster,
                snapshot_config,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ClusterDemo {
            database_url,
            nodes,
            accounts,
            concurrency,
            kill_after_ms,
            load_after_recovery_ms,
            seed,
            max_connections,
            node_log,
        } => {
            init_logging("warn");
            let report = cluster_demo::run(ClusterDemoOptions {
                database_url,
                nodes: usize::try_from(nodes)?,
                accounts: usize::try_from(accounts)?,
                concurrency: usize::try_from(concurrency)?,
                kill_after: Duration::from_millis(kill_after_ms),
                load_after_recovery: Duration::from_millis(load_after_recovery_ms),
                seed,
                max_connections,
                node_log,
                executable: std::env::current_exe()?,
            })
            .await?;
            Ok(verdict(&report.render(), report.passed()))
        }
        Command::Inspect {
            database_url,
            json,
            aggregate_type,
            id,
        } => {
            init_logging("warn");
            let stores = Stores::postgres(&database_url, 2).await?;
            let inspection = inspect::inspect(&stores, &aggregate_type, &id).await?;
            let mut stdout = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut stdout, &inspection)?;
                println!();
            } else {
                inspection.write_text(&mut stdout)?;
            }
            Ok(if inspection.version == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Backup { command } => {
            // Warnings only: info lines would tear the progress bar.
            init_logging("warn");
            let report = sample_app::backup::run(command, std::io::stderr().is_terminal()).await?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshots { command } => {
            init_logging("warn");
            let report =
                sample_app::snapshot_cli::run(command, std::io::stderr().is_terminal()).await?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
