//! A projection process for the projection crash test: runs the exactly-once PostgreSQL
//! projection `stream_totals` over the event store (catch-up in small batches, then live, woken
//! by LISTEN/NOTIFY) until it is killed, and reports every batch it starts and every checkpoint
//! it commits, one flushed line each. Its handler is deliberately not idempotent, so a batch
//! counted twice or half shows in the read model. See `integration_tests::projection_node` for
//! the read model and the protocol.

use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::event_stores::{EventStore, PgConfig, PgEventStore, RecordedEvent};
use async_trait::async_trait;
use clap::Parser;
use integration_tests::projection_node::{Amount, NodeLine, PROJECTION, READ_MODEL_DDL};
use projections::postgres::PgProjection;
use projections::{HandlerError, Projector, ProjectorSettings};
use sqlx::PgConnection;

/// Command-line arguments.
#[derive(Debug, Parser)]
struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Reported to PostgreSQL as `application_name`.
    #[arg(long, default_value = "projection-node")]
    name: String,
    /// Events per batch.
    #[arg(long, default_value_t = 25)]
    batch_size: usize,
    /// Pause in the middle of every batch (its transaction open, half its writes done), in ms.
    #[arg(long, default_value_t = 0)]
    handle_delay_ms: u64,
    /// Poll interval when caught up, in ms (notifications wake it sooner).
    #[arg(long, default_value_t = 50)]
    poll_interval_ms: u64,
}

fn say(line: &NodeLine) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the test is gone; nothing left to report to.
    if writeln!(out, "{}", line.line())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Per stream: events counted, sum of their amounts, last version. Not idempotent on purpose.
struct StreamTotals {
    handle_delay: Duration,
}

#[async_trait]
impl PgProjection for StreamTotals {
    fn name(&self) -> &str {
        PROJECTION
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), HandlerError> {
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            say(&NodeLine::Handling {
                first: first.position,
                last: last.position,
                events: events.len() as u64,
            });
        }
        let half = events.len() / 2;
        for (i, event) in events.iter().enumerate() {
            if i == half && !self.handle_delay.is_zero() {
                // Half the batch written, uncommitted: a kill now must leave none of it.
                tokio::time::sleep(self.handle_delay).await;
            }
            let amount = Amount::decode(&event.payload)?.amount;
            sqlx::query(
                "INSERT INTO stream_totals (stream, events, amount_sum, last_version) \
                 VALUES ($1, 1, $2, $3) \
                 ON CONFLICT (stream) DO UPDATE SET \
                 events = stream_totals.events + 1, \
                 amount_sum = stream_totals.amount_sum + EXCLUDED.amount_sum, \
                 last_version = EXCLUDED.last_version",
            )
            .bind(event.stream.to_string())
            .bind(amount)
            .bind(i64::try_from(event.version)?)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("TRUNCATE stream_totals")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let config = PgConfig::new(args.database_url.clone())
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(10))
        .application_name(args.name.clone());
    let events = PgEventStore::connect(&config).await?;
    let pool = events.pool().clone();
    sqlx::query(READ_MODEL_DDL).execute(&pool).await?;
    let store: Arc<dyn EventStore> = Arc::new(events);
    let settings = ProjectorSettings::default()
        .batch_size(args.batch_size)
        .poll_interval(Duration::from_millis(args.poll_interval_ms))
        .max_backoff(Duration::from_millis(200));
    let projector = Projector::with_settings(store, settings);
    let _listening = projector.listen(&pool).await?;
    let running = projector
        .run_pg(
            StreamTotals {
                handle_delay: Duration::from_millis(args.handle_delay_ms),
            },
            pool,
        )
        .await?;
    say(&NodeLine::Ready(std::process::id()));
    let mut reported = None;
    let mut last_error = None;
    loop {
        let stats = running.stats();
        let now = (stats.position, stats.batches, stats.retries);
        if reported != Some(now) {
            say(&NodeLine::At {
                position: stats.position,
                handled: stats.events_handled,
                batches: stats.batches,
                retries: stats.retries,
            });
            reported = Some(now);
        }
        if stats.last_error.is_some() && stats.last_error != last_error {
            eprintln!(
                "projection node: batch failed, retrying: {}",
                stats.last_error.as_deref().unwrap_or_default()
            );
        }
        last_error = stats.last_error;
        running
            .wait_for(stats.position + 1, Duration::from_millis(100))
            .await;
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}
