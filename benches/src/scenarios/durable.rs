//! Scenario 3: durable commands on PostgreSQL.
//!
//! Commands/s and p99 of `Executor::execute` on `PgEventStore` with 1, 16 and 64 aggregates in
//! parallel, one caller per aggregate, against two baselines on the same server in the same
//! run and with the same concurrency:
//!
//! - a raw single-row `INSERT` loop through sqlx (the same pool size, the caller knows its
//!   next version), the least work a durable append can be;
//! - `pgbench` with a custom script that appends the way our store does (read the stream's head
//!   and insert the next version in one statement), one connection per client, `-M prepared`,
//!   with per-transaction logs for the p99.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::Executor;
use event_stores::{InMemorySnapshotStore, PgConfig, PgEventStore};
use hdrhistogram::Histogram;
use sqlx::postgres::PgPoolOptions;

use crate::BoxError;
use crate::ledger::{Ledger, LedgerCommand, LedgerEvent};
use crate::measure::{
    Measurement, fmt_duration, fmt_rate, fmt_ratio, histogram, ratio, run_callers,
};
use crate::pg::{find_binary, with_database};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;
use crate::scenarios::executor::{activate_all, command_path_settings, ids};

const AGGREGATES: [usize; 3] = [1, 16, 64];

async fn measure_ours(
    ctx: &Ctx,
    events: &PgEventStore,
    aggregates: usize,
) -> Result<Measurement, BoxError> {
    let executor = Executor::builder(
        Arc::new(events.clone()),
        Arc::new(InMemorySnapshotStore::new()),
    )
    .register::<Ledger>(command_path_settings())
    .build()?;
    let ids = ids(&format!("durable{aggregates}"), aggregates);
    activate_all(&executor, &ids).await?;
    let ex = executor.clone();
    let measurement = run_callers(
        aggregates,
        ctx.warmup(),
        ctx.pg_duration(),
        move |caller, _| {
            let executor = ex.clone();
            let ids = Arc::clone(&ids);
            async move {
                executor
                    .execute::<Ledger>(&ids[caller], LedgerCommand::Deposit { amount: 1 })
                    .await?;
                Ok(())
            }
        },
    )
    .await?;
    executor.shutdown().await;
    Ok(measurement)
}

async fn measure_raw_insert(
    ctx: &Ctx,
    pool: &sqlx::PgPool,
    aggregates: usize,
) -> Result<Measurement, BoxError> {
    let payload = Arc::new(aggregate_actors::codec::encode(&LedgerEvent::Deposited {
        amount: 1,
    })?);
    let versions: Arc<Vec<std::sync::atomic::AtomicI64>> = Arc::new(
        (0..aggregates)
            .map(|_| std::sync::atomic::AtomicI64::new(0))
            .collect(),
    );
    let pool = pool.clone();
    run_callers(
        aggregates,
        ctx.warmup(),
        ctx.pg_duration(),
        move |caller, _| {
            let pool = pool.clone();
            let payload = Arc::clone(&payload);
            let versions = Arc::clone(&versions);
            async move {
                let version =
                    versions[caller].fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                sqlx::query(
                    "INSERT INTO raw_events (stream, version, payload) VALUES ($1, $2, $3)",
                )
                .bind(format!("raw{aggregates}-{caller}"))
                .bind(version)
                .bind(&payload[..])
                .execute(&pool)
                .await?;
                Ok(())
            }
        },
    )
    .await
}

/// What a pgbench run reported.
struct Pgbench {
    tps: f64,
    latency: Histogram<u64>,
}

fn run_pgbench(
    pgbench: &Path,
    url: &str,
    clients: usize,
    seconds: u64,
    work: &Path,
) -> Result<Pgbench, BoxError> {
    let logs = work.join(format!("log{clients}"));
    std::fs::create_dir_all(&logs)?;
    let script = work.join("append.sql");
    let output = Command::new(pgbench)
        .arg("-n")
        .arg("-M")
        .arg("prepared")
        .arg("-f")
        .arg(&script)
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(clients.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-l")
        .arg(format!("--log-prefix={}", logs.join("pgb").display()))
        .arg(url)
        .current_dir(work)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pgbench failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let tps = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {stdout}"))?;
    let mut latency = histogram()?;
    for entry in std::fs::read_dir(&logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            // client_id transaction_no time_us script_no time_epoch time_us_part
            if let Some(micros) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                latency.saturating_record((micros * 1_000).max(1));
            }
        }
    }
    std::fs::remove_dir_all(&logs)?;
    Ok(Pgbench { tps, latency })
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let title = super::ALL[2].title;
    let Some(pg) = &ctx.pg else {
        return Ok(Section::skipped(
            title,
            "no PostgreSQL (no database URL, no binaries)",
        ));
    };
    let mut section = Section::new(
        title,
        "One caller (tokio task) per aggregate, each sending one-event deposits back to back to \
         its own aggregate through `Executor::execute` on `PgEventStore` (pool of 64; strategy \
         `Never`). Baselines on the same server, same run, same concurrency: a raw single-row \
         `INSERT` loop through sqlx (same pool size; each caller inserts the next version of its \
         own stream, the least work a durable append can be), and `pgbench -M prepared` with a \
         custom script that appends like our store (reads the stream's head and inserts the \
         next version in one statement), one connection per client, `-c N -j N -T secs`. \
         What \"durable\" means is the server's setting (see fsync/synchronous_commit above).",
    );
    let url = pg.create_database("durable").await?;
    let config = PgConfig::new(url.clone()).max_connections(64);
    let events = PgEventStore::connect(&config).await?;
    let pool = PgPoolOptions::new()
        .max_connections(64)
        .connect(&url)
        .await?;
    sqlx::query(
        "CREATE TABLE raw_events (stream text NOT NULL, version bigint NOT NULL, \
         payload bytea NOT NULL, PRIMARY KEY (stream, version))",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "CREATE TABLE pgbench_append (stream int NOT NULL, version bigint NOT NULL, \
         payload bytea NOT NULL, PRIMARY KEY (stream, version))",
    )
    .execute(&pool)
    .await?;

    let pgbench = find_binary("pgbench");
    let work = std::env::temp_dir().join(format!("bench-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let payload_hex: String =
        aggregate_actors::codec::encode(&LedgerEvent::Deposited { amount: 1 })?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    std::fs::write(
        work.join("append.sql"),
        format!(
            "INSERT INTO pgbench_append (stream, version, payload) \
             SELECT :client_id, COALESCE(MAX(version), 0) + 1, '\\x{payload_hex}'::bytea \
             FROM pgbench_append WHERE stream = :client_id;\n"
        ),
    )?;
    let seconds = ctx.pg_duration().as_secs().max(1);

    let mut table = Table::new(
        "",
        &[
            "aggregates = callers",
            "ours cmd/s",
            "ours p50",
            "ours p99",
            "raw INSERT/s",
            "raw p99",
            "pgbench tps",
            "pgbench p99",
            "ours ÷ raw",
            "ours ÷ pgbench",
        ],
    );
    let mut headline = None;
    let mut lines = Vec::new();
    for &aggregates in &AGGREGATES {
        let ours = measure_ours(ctx, &events, aggregates).await?;
        let raw = measure_raw_insert(ctx, &pool, aggregates).await?;
        let bench = match &pgbench {
            Some(binary) => {
                let db_url = with_database(pg.url(), &database_name(&url));
                match run_pgbench(binary, &db_url, aggregates, seconds, &work) {
                    Ok(result) => Some(result),
                    Err(error) => {
                        section
                            .notes
                            .push(format!("pgbench with {aggregates} clients failed: {error}"));
                        None
                    }
                }
            }
            None => None,
        };
        let vs_raw = ratio(ours.per_second(), raw.per_second());
        let vs_bench = bench
            .as_ref()
            .map_or(f64::NAN, |b| ratio(ours.per_second(), b.tps));
        println!(
            "  durable: {aggregates} aggregates: ours {}, raw INSERT {}, pgbench {}",
            fmt_rate(ours.per_second()),
            fmt_rate(raw.per_second()),
            bench.as_ref().map_or("n/a".into(), |b| fmt_rate(b.tps))
        );
        table.row(vec![
            aggregates.to_string(),
            fmt_rate(ours.per_second()),
            fmt_duration(ours.p50()),
            fmt_duration(ours.p99()),
            fmt_rate(raw.per_second()),
            fmt_duration(raw.p99()),
            bench.as_ref().map_or("n/a".into(), |b| fmt_rate(b.tps)),
            bench.as_ref().map_or("n/a".into(), |b| {
                fmt_duration(Duration::from_nanos(b.latency.value_at_quantile(0.99)))
            }),
            fmt_ratio(vs_raw),
            fmt_ratio(vs_bench),
        ]);
        lines.push((aggregates, vs_raw, vs_bench, ours.p50(), raw.quantile(0.5)));
        if aggregates == 16 {
            headline = Some(Headline {
                scenario: title.into(),
                metric: "commands/s, 16 aggregates, one caller each".into(),
                ours: fmt_rate(ours.per_second()),
                baseline: "raw single-row INSERT loop (sqlx)".into(),
                baseline_figure: fmt_rate(raw.per_second()),
                ratio: format!("{} ↑", fmt_ratio(vs_raw)),
            });
        }
    }
    section.tables.push(table);
    let _ = std::fs::remove_dir_all(&work);
    pool.close().await;
    events.close().await;
    if pgbench.is_none() {
        section.notes.push(
            "pgbench: not found on PATH or in /usr/lib/postgresql/*/bin; not measured.".into(),
        );
    }
    section.ratio_line = format!(
        "Ratio: ours ÷ raw INSERT = {}; ours ÷ pgbench = {} (at 1 / 16 / 64 aggregates).",
        lines
            .iter()
            .map(|l| fmt_ratio(l.1))
            .collect::<Vec<_>>()
            .join(" / "),
        lines
            .iter()
            .map(|l| fmt_ratio(l.2))
            .collect::<Vec<_>>()
            .join(" / "),
    );
    if let Some(&(_, vs_raw, _, ours_p50, raw_p50)) = lines.first() {
        section.notes.push(format!(
            "At one aggregate a command takes {} (p50) against {} for the bare INSERT ({} of its \
             throughput): our append is one statement too, but a heavier one (a CTE reads the \
             stream head, then an UNNEST insert of 11 columns with a unique event id and a \
             position derived from the transaction id) plus the actor hop and encoding. \
             pgbench's script does the same head read + insert and is the fairer mirror.",
            fmt_duration(ours_p50),
            fmt_duration(raw_p50),
            fmt_ratio(vs_raw)
        ));
    }
    section.headline = headline;
    Ok(section)
}

/// The database name in a URL (the path's last segment, without query).
fn database_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or_default().to_owned()
}
