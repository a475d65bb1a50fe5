//! Concurrent one-event appends to PostgreSQL, one task per stream, with group commit on and
//! off, beside a raw single-row `INSERT` loop at the same concurrency; rounds alternate.
//!
//! ```sh
//! scripts/pg-tmp run -- cargo run --release -p event-stores --example group_commit
//! ```
//!
//! The full comparison (ours through the executor, pgbench, durable and test settings) is
//! scenario 3 of `make bench`; this is the store alone, for quick experiments.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use event_stores::contract::{fresh_stream, numbered_events};
use event_stores::testing::fresh_database;
use event_stores::{EventStore, PgEventStore, StoreResult};

const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(db) = fresh_database().await else {
        println!("no DATABASE_URL: nothing to measure");
        return Ok(());
    };
    let config = db.config().max_connections(64);
    // GROUP_COMMIT_IN_FLIGHT overrides the batches in flight, for tuning.
    let mut settings = event_stores::GroupCommit::default();
    if let Some(n) = std::env::var("GROUP_COMMIT_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.max_batches_in_flight = Some(n);
    }
    if let Some(n) = std::env::var("GROUP_COMMIT_LINGER_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.linger = Duration::from_micros(n);
    }
    let on = PgEventStore::connect(&config.clone().group_commit_settings(settings)).await?;
    let off = PgEventStore::connect(&config.clone().group_commit(false)).await?;
    sqlx::query(
        "CREATE TABLE raw_events (stream text, version bigint, payload bytea, \
         PRIMARY KEY (stream, version))",
    )
    .execute(on.pool())
    .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(on.pool())
        .await?;
    println!("fsync={fsync}");
    println!(
        "{:>8} {:>14} {:>14} {:>14} {:>10}",
        "streams", "group commit", "one by one", "raw INSERT", "on ÷ raw"
    );
    for streams in [1, 16, 64] {
        let (mut with, mut without, mut raw) = (0.0, 0.0, 0.0);
        for _ in 0..ROUNDS {
            with += rate(streams, Target::Store(on.clone())).await?;
            without += rate(streams, Target::Store(off.clone())).await?;
            raw += rate(streams, Target::Raw(on.pool().clone())).await?;
        }
        let n = ROUNDS as f64;
        println!(
            "{streams:>8} {:>12.0}/s {:>12.0}/s {:>12.0}/s {:>9.2}×   (batches: {:?})",
            with / n,
            without / n,
            raw / n,
            with / raw,
            on.group_commit_stats()
        );
    }
    Ok(())
}

#[derive(Clone)]
enum Target {
    Store(PgEventStore),
    Raw(sqlx::PgPool),
}

/// Appends per second of `streams` tasks, each appending to its own fresh stream for one round.
async fn rate(streams: usize, target: Target) -> StoreResult<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (target, stop, done) = (target.clone(), Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                let stream = fresh_stream("rate");
                let mut version = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match &target {
                        Target::Store(store) => {
                            store
                                .append(&stream, version, numbered_events(version, 1))
                                .await?;
                        }
                        Target::Raw(pool) => {
                            sqlx::query("INSERT INTO raw_events VALUES ($1, $2, $3)")
                                .bind(stream.aggregate_id())
                                .bind(version as i64 + 1)
                                .bind(&version.to_le_bytes()[..])
                                .execute(pool)
                                .await
                                .map_err(|e| event_stores::StoreError::Backend {
                                    message: e.to_string(),
                                    source: None,
                                })?;
                        }
                    }
                    version += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                StoreResult::Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for task in tasks {
        task.await.map_err(|e| event_stores::StoreError::Backend {
            message: e.to_string(),
            source: None,
        })??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}
