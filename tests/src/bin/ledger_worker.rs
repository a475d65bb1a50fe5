//! A worker process for the crash and concurrent-writer tests: runs a random command load on
//! wallets in PostgreSQL through one executor and reports, one flushed line each, every command
//! acknowledged (only after `execute` returned Ok) or failed. See `integration_tests::worker`
//! for the protocol.

use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::event_stores::{PgConfig, PgEventStore, PgSnapshotStore};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{AggregateSettings, CommandError, CommandOptions, Executor, ExecutorError};
use clap::Parser;
use integration_tests::wallet::{Wallet, WalletCommand};
use integration_tests::worker::Ack;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncBufReadExt;

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Reported to PostgreSQL as `application_name`.
    #[arg(long, default_value = "worker")]
    name: String,
    /// Wallet ids are `<prefix>-<n>`.
    #[arg(long, default_value = "w")]
    prefix: String,
    /// Number of wallets.
    #[arg(long, default_value_t = 8)]
    ids: usize,
    /// Concurrent tasks.
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Commands per task; 0 = until killed.
    #[arg(long, default_value_t = 0)]
    commands: u64,
    /// Seed of the command mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Snapshot every N events.
    #[arg(long, default_value_t = 5)]
    snapshot_every: u64,
    /// Conflict retries per command.
    #[arg(long, default_value_t = 3)]
    max_conflict_retries: u32,
    /// After READY, wait for a line on stdin before sending commands.
    #[arg(long)]
    wait_for_go: bool,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the test is gone; nothing left to report to.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn next_command(rng: &mut StdRng) -> WalletCommand {
    match rng.random_range(0..100) {
        0..60 => WalletCommand::deposit(rng.random_range(1..=20)),
        60..85 => WalletCommand::withdraw(rng.random_range(1..=30)),
        _ => {
            let parts = rng.random_range(2..=4);
            WalletCommand::split((0..parts).map(|_| rng.random_range(1..=10)).collect())
        }
    }
}

fn kind(error: &CommandError<integration_tests::wallet::WalletError>) -> &'static str {
    match error {
        CommandError::Rejected(_) => "rejected",
        CommandError::Indeterminate(_) => "indeterminate",
        CommandError::NotStored(ExecutorError::Conflict { .. }) => "conflict",
        CommandError::NotStored(ExecutorError::Timeout { .. }) => "timeout",
        CommandError::NotStored(ExecutorError::ActorStopped { .. }) => "stopped",
        CommandError::NotStored(e) if e.is_retryable() => "unavailable",
        CommandError::NotStored(_) => "other",
    }
}

async fn run_task(executor: Executor, args: Arc<Args>, task: usize) {
    let mut rng =
        StdRng::seed_from_u64(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ task as u64);
    let mut sent = 0u64;
    while args.commands == 0 || sent < args.commands {
        sent += 1;
        let id = format!("{}-{}", args.prefix, rng.random_range(0..args.ids.max(1)));
        let command = next_command(&mut rng);
        let (Some(command_id), amount) = (command.id(), command.net_amount()) else {
            continue;
        };
        let options = CommandOptions::new().command_id(command_id.into());
        match executor.execute_with::<Wallet>(&id, command, options).await {
            Ok(done) => say(&Ack {
                id,
                version: done.version,
                amount,
                command: command_id,
                events: u32::try_from(done.events.len()).unwrap_or(u32::MAX),
            }
            .line()),
            Err(error) => {
                let kind = kind(&error);
                if kind == "other" {
                    eprintln!("worker: {id}: unexpected error: {error}");
                }
                say(&format!("NACK {id} {command_id} {kind}"));
            }
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let args = Arc::new(args);
    let config = PgConfig::new(args.database_url.clone())
        .max_connections(u32::try_from(args.tasks + 2).unwrap_or(16))
        .acquire_timeout(Duration::from_secs(10))
        .application_name(args.name.clone());
    let events = PgEventStore::connect(&config).await?;
    let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), config.limits)
        .with_client_timeout(config.client_timeout());
    let executor = Executor::builder(Arc::new(events), Arc::new(snapshots))
        .register::<Wallet>(
            AggregateSettings::new()
                .strategy(EveryNEvents::new(args.snapshot_every.max(1)))
                .max_conflict_retries(args.max_conflict_retries),
        )
        .build()?;
    say(&format!("READY {}", std::process::id()));
    if args.wait_for_go {
        let mut line = String::new();
        tokio::io::BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await?;
    }
    let tasks: Vec<_> = (0..args.tasks.max(1))
        .map(|task| tokio::spawn(run_task(executor.clone(), Arc::clone(&args), task)))
        .collect();
    for task in tasks {
        task.await?;
    }
    executor.shutdown().await;
    let stats = executor
        .stats_of::<Wallet>()
        .ok_or("wallet is not registered")?
        .aggregate;
    say(&format!(
        "STATS succeeded={} rejected={} failed={} conflicts={} activations={} \
         snapshots_taken={} snapshots_failed={} snapshots_skipped_invalid={}",
        stats.commands_succeeded,
        stats.commands_rejected,
        stats.commands_failed,
        stats.conflicts,
        stats.activations,
        stats.snapshots_taken,
        stats.snapshots_failed,
        stats.snapshots_skipped_invalid
    ));
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}
