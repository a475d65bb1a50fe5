//! Scenario 3: durable commands on PostgreSQL.
//!
//! Commands/s and p99 of `Executor::execute` on `PgEventStore` with 1, 16 and 64 aggregates in
//! parallel, one caller per aggregate, against two baselines on the same server in the same
//! run and with the same concurrency:
//!
//! - a raw single-row `INSERT` loop through sqlx (the same pool size and pool settings, the
//!   caller knows its next version), the least work a durable append can be;
//! - `pgbench` with a custom script that appends the way our store does (read the stream's head
//!   and insert the next version in one statement), one connection per client, `-M prepared`,
//!   with per-transaction logs for the latencies (the `pgbench` module).
//!
//! Every system runs in short rounds, interleaved (ours, the store alone, the raw INSERT,
//! pgbench; backwards in the next round), and each system's rounds are merged. All of it runs in
//! two modes: on the test server (fsync and synchronous commit off) and on a durable one (fsync,
//! synchronous_commit and full_page_writes on), when there is one.

mod pgbench;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use aggregate_actors::Executor;
use event_stores::{EventStore, InMemorySnapshotStore, PgConfig, PgEventStore, StreamId};
use sqlx::postgres::PgPoolOptions;

use crate::BoxError;
use crate::figures::fmt_rate;
use crate::ledger::{Ledger, LedgerCommand, LedgerEvent, new_event};
use crate::measure::{Measurement, Op, Round, callers_round, op, run_rounds};
use crate::pg::find_binary;
use crate::report::Section;
use crate::scenarios::executor::{activate_all, command_path_settings, ids};
use crate::scenarios::{Ctx, PgMode};

use self::pgbench::Pgbench;
use self::report::{Row, Schema};

const AGGREGATES: [usize; 3] = [1, 16, 64];
/// Connections of every Rust system's pool.
const POOL: u32 = 64;
/// Length of one round of one system: whole seconds, pgbench's unit.
const SLICE: Duration = Duration::from_secs(1);

const OURS: &str = "ours (`PgConfig` defaults)";
const NO_GROUP_COMMIT: &str = "(diagnostic) ours, group commit off";
const STORE: &str = "`PgEventStore::append` alone (no actor)";
const RAW: &str = "raw INSERT loop (sqlx)";
const PGBENCH: &str = "pgbench (head read + insert, libpq)";

/// An executor on `events` with `aggregates` live aggregates, and the operation that sends
/// caller `c`'s deposits to aggregate `c`.
async fn ours_op(
    events: &PgEventStore,
    aggregates: usize,
    prefix: &str,
) -> Result<(Executor, Op), BoxError> {
    let executor = Executor::builder(
        Arc::new(events.clone()),
        Arc::new(InMemorySnapshotStore::new()),
    )
    .register::<Ledger>(command_path_settings())
    .build()?;
    let ids = ids(&format!("durable{prefix}{aggregates}"), aggregates);
    activate_all(&executor, &ids).await?;
    let ex = executor.clone();
    let op = op(move |caller, _| {
        let executor = ex.clone();
        let ids = Arc::clone(&ids);
        async move {
            executor
                .execute::<Ledger>(&ids[caller], LedgerCommand::Deposit { amount: 1 })
                .await?;
            Ok(())
        }
    });
    Ok((executor, op))
}

/// `PgEventStore::append` called directly (no actor, no executor): what the store's statement
/// costs on its own.
fn store_op(events: &PgEventStore, aggregates: usize) -> Result<Op, BoxError> {
    let streams: Arc<Vec<StreamId>> = Arc::new(
        (0..aggregates)
            .map(|i| StreamId::new("direct", format!("direct{aggregates}-{i}")))
            .collect::<Result<_, _>>()?,
    );
    let versions: Arc<Vec<AtomicU64>> =
        Arc::new((0..aggregates).map(|_| AtomicU64::new(0)).collect());
    let store = events.clone();
    Ok(op(move |caller, _| {
        let store = store.clone();
        let streams = Arc::clone(&streams);
        let versions = Arc::clone(&versions);
        async move {
            let event = new_event(&LedgerEvent::Deposited { amount: 1 })?;
            let expected = versions[caller].fetch_add(1, Ordering::Relaxed);
            store
                .append(&streams[caller], expected, vec![event])
                .await?;
            Ok(())
        }
    }))
}

/// The raw baseline's table: what a durable append needs at the least.
const RAW_TABLE: &str = "CREATE TABLE raw_events (stream text NOT NULL, version bigint NOT NULL, \
     payload bytea NOT NULL, PRIMARY KEY (stream, version))";

/// A single-row INSERT of the next version of the caller's own stream.
fn raw_insert_op(pool: &sqlx::PgPool, aggregates: usize) -> Result<Op, BoxError> {
    let payload = Arc::new(aggregate_actors::codec::encode(&LedgerEvent::Deposited {
        amount: 1,
    })?);
    let versions: Arc<Vec<AtomicI64>> =
        Arc::new((0..aggregates).map(|_| AtomicI64::new(0)).collect());
    let pool = pool.clone();
    Ok(op(move |caller, _| {
        let pool = pool.clone();
        let payload = Arc::clone(&payload);
        let versions = Arc::clone(&versions);
        async move {
            let version = versions[caller].fetch_add(1, Ordering::Relaxed) + 1;
            sqlx::query("INSERT INTO raw_events (stream, version, payload) VALUES ($1, $2, $3)")
                .bind(format!("raw{aggregates}-{caller}"))
                .bind(version)
                .bind(&payload[..])
                .execute(&pool)
                .await?;
            Ok(())
        }
    }))
}

/// The columns and indexes of a table, for the report's account of what each append writes.
async fn schema_of(pool: &sqlx::PgPool, table: &str) -> Result<Schema, BoxError> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes \
         WHERE schemaname = current_schema() AND tablename = $1 ORDER BY indexname",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    Ok(Schema { columns, indexes })
}

/// What one mode measured: per level, a row per system and the appends per group-commit
/// statement of ours and the store alone; and the schemas compared.
struct ModeResult {
    levels: Vec<(usize, Vec<Row>)>,
    batching: Vec<(usize, f64)>,
    ours_schema: Schema,
    raw_schema: Schema,
}

/// Every level of one mode, on a fresh database of the mode's server.
async fn measure_mode(
    ctx: &Ctx,
    mode: &PgMode,
    pgbench_binary: Option<&PathBuf>,
    notes: &mut Vec<String>,
) -> Result<ModeResult, BoxError> {
    let url = mode.server.create_database("durable").await?;
    let config = PgConfig::new(url.clone()).max_connections(POOL);
    let events = PgEventStore::connect(&config).await?;
    // A diagnostic: the same settings with every append sent on its own.
    let single = PgEventStore::connect(&config.clone().group_commit(false)).await?;
    // The same pool settings as ours: `PgConfig` does not ping before an acquire either.
    let pool = PgPoolOptions::new()
        .max_connections(POOL)
        .test_before_acquire(config.ping_before_acquire)
        .connect(&url)
        .await?;
    sqlx::query(RAW_TABLE).execute(&pool).await?;
    let ours_schema = schema_of(&pool, "events").await?;
    let raw_schema = schema_of(&pool, "raw_events").await?;
    let mut pgbench = match pgbench_binary {
        Some(binary) => {
            let payload = aggregate_actors::codec::encode(&LedgerEvent::Deposited { amount: 1 })?;
            Some(Arc::new(
                Pgbench::prepare(binary.clone(), &url, &pool, &payload, mode.name).await?,
            ))
        }
        None => None,
    };

    let rounds: u32 = if ctx.quick { 2 } else { 5 };
    let mut levels = Vec::new();
    let mut batching = Vec::new();
    for &aggregates in &AGGREGATES {
        let (executor, ours) = ours_op(&events, aggregates, "d").await?;
        let (single_executor, ours_single) = ours_op(&single, aggregates, "s").await?;
        let mut systems: Vec<(&'static str, Round)> = vec![
            (OURS, callers_round(aggregates, ours)),
            (NO_GROUP_COMMIT, callers_round(aggregates, ours_single)),
            (
                STORE,
                callers_round(aggregates, store_op(&events, aggregates)?),
            ),
            (
                RAW,
                callers_round(aggregates, raw_insert_op(&pool, aggregates)?),
            ),
        ];
        if let Some(bench) = &pgbench {
            systems.push((PGBENCH, bench.round(aggregates)));
        }
        // Warm-ups, one each; pgbench leaves the comparison (with a note) if it fails.
        let mut kept = Vec::with_capacity(systems.len());
        for (system, round) in systems {
            match round(ctx.warmup()).await {
                Ok(_) => kept.push((system, round)),
                Err(error) if system == PGBENCH => {
                    notes.push(format!(
                        "pgbench ({}, {aggregates} clients) failed and is left out: {error}",
                        mode.name
                    ));
                    pgbench = None;
                }
                Err(error) => return Err(error),
            }
        }
        let contenders: Vec<Round> = kept.iter().map(|(_, round)| Arc::clone(round)).collect();
        let before = events.group_commit_stats();
        let measured =
            run_rounds(rounds as usize, Duration::ZERO, SLICE * rounds, &contenders).await?;
        let after = events.group_commit_stats();
        batching.push((
            aggregates,
            after.appends.saturating_sub(before.appends) as f64
                / after.batches.saturating_sub(before.batches).max(1) as f64,
        ));
        executor.shutdown().await;
        single_executor.shutdown().await;
        let rows: Vec<Row> = kept
            .iter()
            .zip(&measured)
            .map(|((system, _), m)| Row::of(system, m))
            .collect();
        println!(
            "  durable ({}): {aggregates} aggregates: {}",
            mode.name,
            rows.iter()
                .map(|r| format!("{} {}", r.system, fmt_rate(r.per_second)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        levels.push((aggregates, rows));
    }
    drop(pgbench);
    pool.close().await;
    events.close().await;
    single.close().await;
    Ok(ModeResult {
        levels,
        batching,
        ours_schema,
        raw_schema,
    })
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let title = super::ALL[2].title;
    let (modes, durable_not_run) = ctx.pg_modes().await?;
    if modes.is_empty() {
        return Ok(Section::skipped(
            title,
            "no PostgreSQL (no database URL, no binaries)",
        ));
    }
    let pgbench = find_binary("pgbench");
    let mut notes = Vec::new();
    let mut results = Vec::new();
    for mode in &modes {
        let result = measure_mode(ctx, mode, pgbench.as_ref(), &mut notes).await?;
        results.push((mode, result));
    }
    if pgbench.is_none() {
        notes.push(
            "pgbench: not found on PATH or in /usr/lib/postgresql/*/bin; not measured.".into(),
        );
    }
    let rounds = if ctx.quick { 2 } else { 5 };
    let mut section = report::section(title, rounds, &results, durable_not_run.as_deref());
    section.notes.extend(notes);
    Ok(section)
}

impl Row {
    fn of(system: &'static str, m: &Measurement) -> Self {
        Self {
            system,
            per_second: m.per_second(),
            p50: m.p50(),
            p99: m.p99(),
        }
    }
}
