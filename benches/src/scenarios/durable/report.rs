//! Scenario 3's section: the table (a row per mode, level and system), the ratio and headline
//! lines with both modes, and the notes (where the time goes, what the raw INSERT does less).

use std::time::Duration;

use crate::figures::{fmt_duration, fmt_rate, fmt_ratio, ratio};
use crate::report::{Headline, Section, Table};
use crate::scenarios::PgMode;

use super::{AGGREGATES, ModeResult, NO_GROUP_COMMIT, OURS, PGBENCH, POOL, RAW, SLICE, STORE};

/// One system's figures at one concurrency.
pub(super) struct Row {
    /// The system's name in the table.
    pub(super) system: &'static str,
    /// Commands (transactions) per second.
    pub(super) per_second: f64,
    /// Median latency.
    pub(super) p50: Duration,
    /// 99th percentile latency.
    pub(super) p99: Duration,
}

/// The columns and indexes of a table.
pub(super) struct Schema {
    /// Column names, in order.
    pub(super) columns: Vec<String>,
    /// Index names.
    pub(super) indexes: Vec<String>,
}

fn find<'a>(rows: &'a [Row], system: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.system == system)
}

/// Ours ÷ `system` in commands/s at every level, e.g. `0.45× / 0.42× / 0.46×`.
fn ratios(result: &ModeResult, system: &str) -> String {
    result
        .levels
        .iter()
        .map(|(_, rows)| {
            let ours = find(rows, OURS).map_or(f64::NAN, |r| r.per_second);
            fmt_ratio(ratio(
                ours,
                find(rows, system).map_or(f64::NAN, |r| r.per_second),
            ))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn level(result: &ModeResult, aggregates: usize) -> Option<&[Row]> {
    result
        .levels
        .iter()
        .find(|(n, _)| *n == aggregates)
        .map(|(_, rows)| rows.as_slice())
}

/// The whole section.
pub(super) fn section(
    title: &str,
    rounds: u32,
    results: &[(&PgMode, ModeResult)],
    durable_not_run: Option<&str>,
) -> Section {
    let servers = results
        .iter()
        .map(|(mode, _)| format!("**{}** ({})", mode.name, mode.settings))
        .chain(durable_not_run.map(|why| format!("**durable**: not run ({why})")))
        .collect::<Vec<_>>()
        .join("; ");
    let mut section = Section::new(
        title,
        format!(
            "One caller (tokio task) per aggregate, each sending one-event deposits back to back \
             to its own aggregate through `Executor::execute` on `PgEventStore` (pool of {POOL}, \
             `PgConfig` defaults: no ping of a connection before handing it out, group commit on, \
             so concurrent appends to different streams share one statement and one commit, \
             each with its own expected-version check, with one batch in flight where commits \
             wait for their WAL flush (durable) and two where they do not (test settings), as \
             `GroupCommit::max_batches_in_flight` picks by default; strategy `Never`). Baselines on the same server, same run, same concurrency: a raw \
             single-row `INSERT` loop through sqlx (pool of {POOL} with the same \
             `test_before_acquire(false)`; each caller inserts the next version of its own \
             stream: the least work a durable append can be), and `pgbench -M prepared` with a \
             custom script that appends like our store (reads the stream's head with \
             `MAX(version)` and inserts the next version in one statement), one connection per \
             client, `-c N -j N`. After one warm-up each, every system runs in interleaved \
             rounds of {} (ours, the diagnostics, the raw INSERT, pgbench, then backwards), \
             {rounds} rounds each, and each system's rounds are merged (pgbench's transactions \
             and per-transaction latencies come from its logs over all rounds, its rate from \
             its `tps` without connection set-up). Two diagnostic rows split our figure: ours \
             with group commit off (`PgConfig::group_commit(false)`, otherwise the same \
             settings: every append its own statement and commit, as the raw INSERT does), and \
             our store's append called directly (no actor, no executor). Everything runs in two \
             modes, each on its own server: {servers}. The difference between the \
             modes is what waiting for the WAL flush costs each system.",
            fmt_duration(SLICE)
        ),
    );

    let mut table = Table::new(
        "",
        &[
            "mode",
            "aggregates = callers",
            "system",
            "cmd/s",
            "p50",
            "p99",
            "ours ÷ this (cmd/s)",
        ],
    );
    for (mode, result) in results {
        for (aggregates, rows) in &result.levels {
            let ours = find(rows, OURS).map_or(f64::NAN, |r| r.per_second);
            for row in rows {
                table.row(vec![
                    mode.name.into(),
                    aggregates.to_string(),
                    row.system.into(),
                    fmt_rate(row.per_second),
                    fmt_duration(row.p50),
                    fmt_duration(row.p99),
                    if row.system == OURS {
                        "–".into()
                    } else {
                        fmt_ratio(ratio(ours, row.per_second))
                    },
                ]);
            }
        }
    }
    section.tables.push(table);

    let levels = AGGREGATES
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" / ");
    let mut per_mode: Vec<String> = results
        .iter()
        .map(|(mode, result)| {
            format!(
                "{}: raw INSERT {}, pgbench {}",
                mode.name,
                ratios(result, RAW),
                ratios(result, PGBENCH)
            )
        })
        .collect();
    if let Some(why) = durable_not_run {
        per_mode.push(format!("durable: not run ({why})"));
    }
    section.ratio_line = format!(
        "Ratio (ours ÷ baseline, commands/s) at {levels} aggregates — {}.",
        per_mode.join("; ")
    );

    section.headline = headline(title, results, durable_not_run.is_some());
    section.notes.extend(time_notes(results));
    if let Some((_, first)) = results.first() {
        section.notes.push(does_less(first));
    }
    let batching: Vec<String> = results
        .iter()
        .map(|(mode, result)| {
            format!(
                "{} {}",
                mode.name,
                result
                    .batching
                    .iter()
                    .map(|(_, mean)| crate::figures::sig3(*mean))
                    .collect::<Vec<_>>()
                    .join(" / ")
            )
        })
        .collect();
    let gains: Vec<String> = results
        .iter()
        .map(|(mode, result)| format!("{} {}", mode.name, ratios(result, NO_GROUP_COMMIT)))
        .collect();
    section.notes.push(format!(
        "Group commit: at {levels} aggregates our store sent on average this many appends per \
         statement (ours and the store-alone row together, warm-ups included): {}; ours ÷ ours \
         with group commit off (commands/s): {}. The raw INSERT and pgbench commit every row \
         on its own (on the durable server PostgreSQL still lets concurrent commits share a \
         WAL flush).",
        batching.join("; "),
        gains.join("; ")
    ));
    for (mode, result) in results {
        for ((aggregates, rows), (_, mean)) in result.levels.iter().zip(&result.batching) {
            if let (Some(ours), Some(single)) = (find(rows, OURS), find(rows, NO_GROUP_COMMIT))
                && *aggregates > 1
                && ours.per_second < 0.9 * single.per_second
            {
                section.notes.push(format!(
                    "Poor figure ({}, {aggregates} aggregates): with group commit ours reaches \
                     only {} of ours without it (p50 {} vs {}), in batches of about {} appends. \
                     A batch's callers all wait for its one statement and commit before any \
                     sends again, while one-by-one commits on separate connections overlap \
                     (and on a durable server share WAL flushes anyway).",
                    mode.name,
                    fmt_ratio(ratio(ours.per_second, single.per_second)),
                    fmt_duration(ours.p50),
                    fmt_duration(single.p50),
                    crate::figures::sig3(*mean),
                ));
            }
        }
    }
    if let [(fast, fast_result), (durable, durable_result)] = results
        && let (Some(before), Some(after)) = (level(fast_result, 16), level(durable_result, 16))
    {
        let change = |system: &str| match (find(before, system), find(after, system)) {
            (Some(b), Some(a)) => format!(
                "{} {} → {} ({})",
                system,
                fmt_rate(b.per_second),
                fmt_rate(a.per_second),
                fmt_ratio(ratio(a.per_second, b.per_second))
            ),
            _ => format!("{system}: not measured in both modes"),
        };
        section.notes.push(format!(
            "From {} to {} at 16 aggregates (commands/s): {}; {}; {}. With synchronous commit \
             every commit waits for its WAL flush; concurrent commits share a flush \
             (PostgreSQL's own group commit), so the cost falls as callers grow.",
            fast.name,
            durable.name,
            change(OURS),
            change(RAW),
            change(PGBENCH)
        ));
    }
    if let Some((mode, result)) = results.first()
        && let Some(rows) = level(result, 1)
        && let (Some(raw), Some(bench)) = (find(rows, RAW), find(rows, PGBENCH))
        && ratio(raw.per_second, bench.per_second) < 0.8
    {
        section.notes.push(format!(
            "Poor figure, explained ({}): pgbench is far ahead of both Rust clients (p50 {} at \
             one client). The raw sqlx INSERT reaches only {} of its throughput although it \
             does less work per statement than pgbench's head read + insert, so most of that \
             gap is the client stack (sqlx's protocol handling and pool, tokio wake-ups on a \
             loaded machine), not the framework; ours ÷ raw INSERT is the framework's own \
             share. See PROFILE.md.",
            mode.name,
            fmt_duration(bench.p50),
            fmt_ratio(ratio(raw.per_second, bench.per_second)),
        ));
    }
    section
}

/// The headline row: 16 aggregates, ours against the raw INSERT, both modes.
fn headline(
    title: &str,
    results: &[(&PgMode, ModeResult)],
    durable_missing: bool,
) -> Option<Headline> {
    let pairs: Vec<(&str, &Row, &Row)> = results
        .iter()
        .filter_map(|(mode, result)| {
            let rows = level(result, 16)?;
            Some((mode.name, find(rows, OURS)?, find(rows, RAW)?))
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let join = |f: &dyn Fn(&(&str, &Row, &Row)) -> String| {
        let mut parts: Vec<String> = pairs.iter().map(f).collect();
        if durable_missing {
            parts.push("not run".into());
        }
        parts.join(" / ")
    };
    Some(Headline {
        scenario: title.into(),
        metric: format!(
            "commands/s, 16 aggregates, one caller each; {} (p99 ours {} vs {})",
            join(&|(name, _, _)| (*name).to_owned()),
            join(&|(_, ours, _)| fmt_duration(ours.p99)),
            join(&|(_, _, raw)| fmt_duration(raw.p99)),
        ),
        ours: join(&|(_, ours, _)| fmt_rate(ours.per_second)),
        baseline: "raw single-row INSERT loop (sqlx)".into(),
        baseline_figure: join(&|(_, _, raw)| fmt_rate(raw.per_second)),
        ratio: format!(
            "{} ↑",
            join(&|(_, ours, raw)| fmt_ratio(ratio(ours.per_second, raw.per_second)))
        ),
    })
}

/// Where the time goes at one aggregate, per mode.
fn time_notes(results: &[(&PgMode, ModeResult)]) -> Vec<String> {
    results
        .iter()
        .filter_map(|(mode, result)| {
            let rows = level(result, 1)?;
            let (ours, store, raw) = (find(rows, OURS)?, find(rows, STORE)?, find(rows, RAW)?);
            let actor = if ours.p50 >= store.p50 {
                format!(
                    "the actor, executor and encoding add about {} over the store",
                    fmt_duration(ours.p50 - store.p50)
                )
            } else {
                "the actor, executor and encoding add nothing measurable over the store (the \
                 store alone measured slower in this run: run-to-run noise)"
                    .to_owned()
            };
            Some(format!(
                "Where the time goes at one aggregate, {} (p50): a command takes {}; our \
                 store's append alone (no actor) takes {}; the bare INSERT takes {}. So {actor}, \
                 and our append costs {} more than the bare INSERT, for the work listed next.",
                mode.name,
                fmt_duration(ours.p50),
                fmt_duration(store.p50),
                fmt_duration(raw.p50),
                fmt_duration(store.p50.saturating_sub(raw.p50)),
            ))
        })
        .collect()
}

/// What the raw INSERT baseline does less than our append, with the two tables' columns and
/// indexes as the server reports them.
fn does_less(result: &ModeResult) -> String {
    let (ours, raw) = (&result.ours_schema, &result.raw_schema);
    format!(
        "What the raw INSERT baseline does less than our append: it knows its stream's next \
         version (a counter in the caller), so it reads no stream head and checks no expected \
         version (ours reads the stream's last version and `recorded_at` by a backward scan of \
         the primary key and inserts only if that version is the expected one, and returns the \
         head it saw, so a conflict is reported without a second query); it writes {} columns \
         ({}) into a table with {} index ({}), where ours writes {} columns ({}) into a table \
         with {} unique indexes ({}): a unique event id (derived from the command id for \
         command events, which is what refuses a duplicate command), and a store-wide \
         position for `read_all`; it computes no position (ours derives it from the writing \
         transaction's id, `pg_current_xact_id()`, so `read_all` never skips a late commit), \
         no `recorded_at` clamp (ours takes `GREATEST(now(), the stream's last recorded_at)` so \
         time never goes back within a stream) and records no command id, event type, schema \
         version or correlation/causation ids; it binds three parameters where a lone one-event \
         append of ours binds ten (a group-commit batch binds every append's stream, expected \
         version and events as arrays, `UNNEST … WITH ORDINALITY`) and gets back the head it \
         saw, the position and `recorded_at`; and it runs without our session settings \
         (statement and lock timeouts, TCP keepalives) and client-side answer timeout. \
         pgbench's script does the head read (`MAX(version)`) but nothing else of that list.",
        raw.columns.len(),
        raw.columns.join(", "),
        raw.indexes.len(),
        raw.indexes.join(", "),
        ours.columns.len(),
        ours.columns.join(", "),
        ours.indexes.len(),
        ours.indexes.join(", "),
    )
}
