//! A node for the reminder crash test: an executor on PostgreSQL serving wallets with
//! reminders, and a reminder scheduler, until it is killed. Prints `ready` once started and
//! then a line with its scheduler's figures every 100 ms.

use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::event_stores::{PgConfig, PgEventStore, PgSnapshotStore};
use aggregate_actors::scheduler::{Scheduler, SchedulerSettings};
use aggregate_actors::{AggregateSettings, Executor};
use clap::Parser;
use integration_tests::wallet::Wallet;

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let config = PgConfig::new(&args.database_url)
        .application_name("reminder-node")
        .max_connections(16);
    let events = PgEventStore::connect(&config).await?;
    let snapshots = PgSnapshotStore::connect(&config).await?;
    let executor = Executor::builder(Arc::new(events), Arc::new(snapshots))
        .register::<Wallet>(AggregateSettings::new().reminders())
        .build()?;
    let scheduler = Scheduler::start(
        executor.clone(),
        SchedulerSettings {
            poll_interval: Duration::from_millis(50),
            retry_after: Duration::from_millis(200),
            ..SchedulerSettings::default()
        },
    );
    say("ready");
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = scheduler.stats();
        say(&format!(
            "fired={} duplicates={} stale={} failed={} in_flight={}",
            stats.fired, stats.duplicates, stats.stale, stats.failed, stats.in_flight
        ));
    }
}
