//! `sample-app`: the ledger service's command line (`demo`, `serve`, `inspect`).

use std::error::Error;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sample_app::demo::{self, DemoOptions};
use sample_app::http::{self, ServeOptions};
use sample_app::inspect;
use sample_app::ledger::Stores;
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

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    match Cli::parse().command {
        Command::Demo {
            accounts,
            commands,
            concurrency,
            seed,
            database_url,
            max_connections,
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
            })
            .await?;
            print!("{}", report.render());
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Serve {
            listen,
            database_url,
            max_connections,
        } => {
            init_logging("info");
            http::serve(ServeOptions {
                listen,
                database_url,
                max_connections,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
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
    }
}
