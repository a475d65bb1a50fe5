//! Scenario 9: projections on PostgreSQL — catch-up over a long history against a bare
//! `read_all` loop, and live lag while writers append.
//!
//! Catch-up: a history of 1 000 000 events (100 000 in quick mode) over 1 000 streams. Three
//! systems read all of it, alternating in rounds: the baseline loops
//! `EventStore::read_all(after, 1 000)` and does nothing with the events; ours runs a
//! `Projector` with a 1 000-event batch, once with an at-least-once `Projection` that counts the
//! events handed to it (checkpoints in memory), once with an exactly-once `PgProjection` that
//! writes one row per batch in the transaction that also moves its checkpoint row. What the
//! baseline does less: no filter, no handler, no checkpoint, no transaction, no stats.
//!
//! Live lag: writers append one-event commands back to back while a `PgProjection` follows with
//! `Projector::listen` (LISTEN/NOTIFY); each event's lag is the time from its `recorded_at` (the
//! appending transaction's `now()`) to the moment the handler sees it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use event_stores::{EventStore, PgConfig, PgEventStore, RecordedEvent, StreamId};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use projections::postgres::PgProjection;
use projections::{HandlerError, InMemoryCheckpoints, Projection, Projector, ProjectorSettings};
use sqlx::PgConnection;

use crate::BoxError;
use crate::figures::{fmt_count, fmt_duration, fmt_rate, fmt_ratio, ratio};
use crate::ledger::{LedgerEvent, new_event};
use crate::measure::{histogram, record};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;

const STREAMS: u64 = 1_000;
const BATCH: usize = 1_000;
const ROUNDS: usize = 3;
const WRITERS: usize = 8;

/// Counts the events handed to it.
struct Counter {
    name: String,
    seen: Arc<AtomicU64>,
}

#[async_trait]
impl Projection for Counter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        self.seen.fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn reset(&self) -> Result<(), HandlerError> {
        self.seen.store(0, Ordering::Relaxed);
        Ok(())
    }
}

/// Writes one row per batch (its size), in the checkpoint's transaction; with `lags`, records
/// each event's lag.
struct Batches {
    name: String,
    lags: Option<Arc<Mutex<Histogram<u64>>>>,
}

#[async_trait]
impl PgProjection for Batches {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), HandlerError> {
        if let Some(lags) = &self.lags {
            let now = Utc::now();
            let mut lags = lags.lock();
            for event in events {
                record(
                    &mut lags,
                    (now - event.recorded_at).to_std().unwrap_or_default(),
                );
            }
        }
        sqlx::query("INSERT INTO projection_batches (projection, events) VALUES ($1, $2)")
            .bind(&self.name)
            .bind(events.len() as i64)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM projection_batches WHERE projection = $1")
            .bind(&self.name)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Appends `total` events over [`STREAMS`] streams, 1 000 per append; returns the last position.
async fn seed(store: &PgEventStore, total: u64) -> Result<u64, BoxError> {
    let per_stream = total / STREAMS;
    let mut last = 0;
    for s in 0..STREAMS {
        let stream = StreamId::new("ledger", format!("p{s}"))?;
        let mut version = 0;
        while version < per_stream {
            let count = (BATCH as u64).min(per_stream - version);
            let batch = (0..count)
                .map(|i| new_event(&LedgerEvent::Deposited { amount: i + 1 }))
                .collect::<Result<Vec<_>, _>>()?;
            last = store.append(&stream, version, batch).await?.last_position;
            version += count;
        }
    }
    Ok(last)
}

async fn raw_read_all(store: &PgEventStore) -> Result<(u64, Duration), BoxError> {
    let started = Instant::now();
    let (mut after, mut read) = (0, 0u64);
    loop {
        let page = store.read_all(after, BATCH).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        read += page.len() as u64;
    }
    Ok((read, started.elapsed()))
}

fn settings() -> ProjectorSettings {
    ProjectorSettings::default()
        .batch_size(BATCH)
        .poll_interval(Duration::from_millis(10))
}

/// The three systems' catch-up times, merged over the rounds.
#[derive(Default)]
struct CatchUp {
    raw: Vec<Duration>,
    at_least_once: Vec<Duration>,
    exactly_once: Vec<Duration>,
}

async fn catch_up(
    store: &Arc<PgEventStore>,
    total: u64,
    last: u64,
    round: usize,
    system: usize,
) -> Result<Duration, BoxError> {
    let projector = Projector::with_settings(store.clone(), settings());
    let started = Instant::now();
    match system {
        0 => {
            let (read, _) = raw_read_all(store).await?;
            if read != total {
                return Err(format!("read_all returned {read} events of {total}").into());
            }
        }
        1 => {
            let seen = Arc::new(AtomicU64::new(0));
            let running = projector.run(
                Counter {
                    name: format!("count-{round}"),
                    seen: Arc::clone(&seen),
                },
                Arc::new(InMemoryCheckpoints::new()),
            );
            if !running.wait_for(last, Duration::from_secs(600)).await {
                return Err("the at-least-once projection did not catch up".into());
            }
            running.stop().await;
            if seen.load(Ordering::Relaxed) != total {
                return Err("the at-least-once projection missed events".into());
            }
        }
        _ => {
            let running = projector
                .run_pg(
                    Batches {
                        name: format!("batches-{round}"),
                        lags: None,
                    },
                    store.pool().clone(),
                )
                .await?;
            if !running.wait_for(last, Duration::from_secs(600)).await {
                return Err("the exactly-once projection did not catch up".into());
            }
            let handled = running.stats().events_handled;
            running.stop().await;
            if handled != total {
                return Err(
                    format!("the exactly-once projection handled {handled} of {total}").into(),
                );
            }
        }
    }
    Ok(started.elapsed())
}

/// Writers append for `duration` while a listening projection follows; returns the lag
/// histogram and the append rate.
async fn live_lag(
    store: &Arc<PgEventStore>,
    duration: Duration,
) -> Result<(Histogram<u64>, f64), BoxError> {
    let projector = Projector::with_settings(store.clone(), settings());
    let _listening = projector.listen(store.pool()).await?;
    let lags = Arc::new(Mutex::new(histogram()?));
    let running = projector
        .run_pg(
            Batches {
                name: "live".into(),
                lags: Some(Arc::clone(&lags)),
            },
            store.pool().clone(),
        )
        .await?;
    // Start from the end of the feed: only the events appended below count.
    let start = store_head(store).await?;
    if !running.wait_for(start, Duration::from_secs(600)).await {
        return Err("the live projection did not reach the head".into());
    }
    *lags.lock() = histogram()?;
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, stop, appended) = (store.clone(), Arc::clone(&stop), Arc::clone(&appended));
            tokio::spawn(async move {
                let stream = StreamId::new("ledger", format!("live-{w}"))?;
                let mut version = 0;
                while !stop.load(Ordering::Relaxed) {
                    let event = new_event(&LedgerEvent::Deposited { amount: 1 })?;
                    store.append(&stream, version, vec![event]).await?;
                    version += 1;
                    appended.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await??;
    }
    let elapsed = started.elapsed();
    let end = store_head(store).await?;
    if !running.wait_for(end, Duration::from_secs(60)).await {
        return Err("the live projection did not catch up after the writers stopped".into());
    }
    running.stop().await;
    let appended = appended.load(Ordering::Relaxed);
    let lags = lags.lock().clone();
    if lags.len() != appended {
        return Err(format!("{} lags recorded for {appended} appends", lags.len()).into());
    }
    Ok((lags, appended as f64 / elapsed.as_secs_f64()))
}

async fn store_head(store: &PgEventStore) -> Result<u64, BoxError> {
    let position: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(store.pool())
        .await?;
    Ok(u64::try_from(position)?)
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let title = super::ALL[8].title;
    let Some(pg) = &ctx.pg else {
        return Ok(Section::skipped(title, "no PostgreSQL server"));
    };
    let total: u64 = if ctx.quick { 100_000 } else { 1_000_000 };
    let mut section = Section::new(
        title,
        format!(
            "Catch-up: a history of {} events over {} streams (one-event payloads as the \
             framework encodes them), read to the end {ROUNDS} times by each system after one warm-up pass, in rounds whose first system rotates: \
             a bare `read_all(after, {BATCH})` loop that does nothing with the events (the \
             baseline: no filter, no handler, no checkpoint, no transaction); a `Projector` with \
             {BATCH}-event batches running an at-least-once `Projection` that counts the events \
             (checkpoints in memory); and the same with an exactly-once `PgProjection` that \
             writes one row per batch in the transaction that also locks and moves its \
             checkpoint row. Live lag: {WRITERS} writers append one-event commands back to back \
             for {} while a `PgProjection` follows with `Projector::listen` (LISTEN/NOTIFY); an \
             event's lag is from its `recorded_at` (its transaction's `now()`, so the commit is \
             included) to when the handler sees it. Test settings server.",
            fmt_count(total),
            fmt_count(STREAMS),
            fmt_duration(ctx.pg_duration()),
        ),
    );
    let url = pg.create_database("projections").await?;
    let store = Arc::new(PgEventStore::connect(&PgConfig::new(url).max_connections(8)).await?);
    sqlx::query(
        "CREATE TABLE projection_batches (projection text NOT NULL, events bigint NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    let seeding = Instant::now();
    let last = seed(&store, total).await?;
    println!(
        "  seeded {} events in {}",
        fmt_count(total),
        fmt_duration(seeding.elapsed())
    );

    // One warm pass first (the seeding left the history in the cache only partly), then the
    // rounds, each starting with the next system, so no system always goes first.
    raw_read_all(&store).await?;
    let mut times = CatchUp::default();
    for round in 0..ROUNDS {
        for turn in 0..3 {
            let system = (round + turn) % 3;
            let took = catch_up(&store, total, last, round, system).await?;
            match system {
                0 => times.raw.push(took),
                1 => times.at_least_once.push(took),
                _ => times.exactly_once.push(took),
            }
        }
    }
    let rate = |samples: &[Duration]| {
        let sum: Duration = samples.iter().sum();
        (total as f64 * samples.len() as f64) / sum.as_secs_f64()
    };
    let (raw, ours, exact) = (
        rate(&times.raw),
        rate(&times.at_least_once),
        rate(&times.exactly_once),
    );
    let mut table = Table::new(
        "Catch-up over the whole history (mean of the rounds)",
        &[
            "system",
            "events",
            "time per pass",
            "events/s",
            "÷ bare read_all",
        ],
    );
    for (name, samples, per_second) in [
        ("bare `read_all` loop (baseline)", &times.raw, raw),
        (
            "`Projector`, at-least-once `Projection`",
            &times.at_least_once,
            ours,
        ),
        (
            "`Projector`, exactly-once `PgProjection`",
            &times.exactly_once,
            exact,
        ),
    ] {
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        table.row(vec![
            name.into(),
            fmt_count(total),
            fmt_duration(mean),
            fmt_rate(per_second),
            fmt_ratio(ratio(per_second, raw)),
        ]);
    }
    section.tables.push(table);

    let (lags, append_rate) = live_lag(&store, ctx.pg_duration()).await?;
    let quantile = |q: f64| fmt_duration(Duration::from_nanos(lags.value_at_quantile(q)));
    let mut live = Table::new(
        "Live lag while writers append",
        &[
            "writers",
            "appends/s",
            "events",
            "lag p50",
            "lag p99",
            "lag max",
        ],
    );
    live.row(vec![
        WRITERS.to_string(),
        fmt_rate(append_rate),
        fmt_count(lags.len()),
        quantile(0.5),
        quantile(0.99),
        fmt_duration(Duration::from_nanos(lags.max())),
    ]);
    section.tables.push(live);

    section.ratio_line = format!(
        "Ratio (events/s ÷ bare read_all): at-least-once {}, exactly-once {}; live lag p99 {} \
         at {} appends/s.",
        fmt_ratio(ratio(ours, raw)),
        fmt_ratio(ratio(exact, raw)),
        quantile(0.99),
        fmt_rate(append_rate),
    );
    section.headline = Some(Headline {
        scenario: title.into(),
        metric: format!(
            "catch-up events/s over {} events; at-least-once / exactly-once (live lag p99 {})",
            fmt_count(total),
            quantile(0.99)
        ),
        ours: format!("{} / {}", fmt_rate(ours), fmt_rate(exact)),
        baseline: "bare `read_all` loop".into(),
        baseline_figure: fmt_rate(raw),
        ratio: format!(
            "{} / {} ↑",
            fmt_ratio(ratio(ours, raw)),
            fmt_ratio(ratio(exact, raw))
        ),
    });
    Ok(section)
}
