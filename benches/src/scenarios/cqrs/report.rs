//! Scenario 4's section: a row per mode, workload and system; ratio and headline lines with
//! both modes; the notes.

use crate::figures::{fmt_count, fmt_duration, fmt_rate, fmt_ratio, ratio};
use crate::measure::Measurement;
use crate::report::{Headline, Section, Table};
use crate::scenarios::PgMode;

use super::ours::Activations;
use super::{COLD_CALLERS, CQRS_SNAPSHOT_EVERY, HISTORY, POOL, WARM_AGGREGATES};

/// How much work each system does.
pub(super) struct Sizes {
    /// Warm deposits per aggregate, over all rounds.
    pub(super) per_caller: u64,
    /// Cold aggregates (one command each), over all rounds.
    pub(super) cold: usize,
    /// Rounds the work is split into.
    pub(super) rounds: usize,
}

/// What one mode measured.
pub(super) struct ModeResult {
    /// Per system (ours first), the warm workload.
    pub(super) warm: Vec<(&'static str, Measurement)>,
    /// Per system (ours first), the cold workload.
    pub(super) cold: Vec<(&'static str, Measurement)>,
    /// Our cold rounds' activations.
    pub(super) activations: Activations,
}

/// Ours and the stronger cqrs-es variant of a workload.
fn strongest<'a>(
    runs: &'a [(&'static str, Measurement)],
) -> Option<(&'a Measurement, &'static str, &'a Measurement)> {
    let ours = &runs.first()?.1;
    let best = runs
        .iter()
        .filter(|r| r.0.starts_with("cqrs-es"))
        .max_by(|a, b| a.1.per_second().total_cmp(&b.1.per_second()))?;
    Some((ours, best.0, &best.1))
}

/// The whole section.
pub(super) fn section(
    title: &str,
    sizes: &Sizes,
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
            "The same ledger domain (shared `decide`/`apply`) on cqrs-es 0.5 + postgres-es 0.5 \
             (their sqlx 0.8, JSON payloads, their schema) and on ours (`PgEventStore` + \
             `PgSnapshotStore`, default settings: snapshot every 100 events, group commit on), \
             each in its own database on the same server. Both pools: {POOL} connections, no \
             ping before handing a connection out (`test_before_acquire(false)`: our \
             `PgConfig` default, set explicitly on cqrs-es's pool, whose sqlx default is to \
             ping). **Warm**: {WARM_AGGREGATES} aggregates with a {HISTORY}-event history, one \
             caller each, {} deposits per aggregate (a fixed count, so all end with the same \
             histories). **Cold**: the first deposit to each of {} aggregates with a \
             {HISTORY}-event history that are not in memory (ours: a fresh executor per round, \
             so every command activates its actor first), {COLD_CALLERS} callers. cqrs-es \
             keeps nothing in memory, so for it warm and cold differ only in history length; \
             it runs event-sourced (replays the history on every command) and with its \
             snapshot store (every {CQRS_SNAPSHOT_EVERY} events). Every system's aggregates \
             are seeded first; then each workload is split into {} rounds of equal work in \
             which the systems take turns (backwards in every other round), and each system's \
             rounds are merged. Everything runs in two modes, each on its own \
             server: {servers}.",
            sizes.per_caller,
            fmt_count(sizes.cold as u64),
            sizes.rounds,
        ),
    );

    let mut table = Table::new(
        "",
        &[
            "mode",
            "workload",
            "system",
            "cmd/s",
            "p50",
            "p99",
            "ours ÷ this (cmd/s)",
        ],
    );
    for (mode, result) in results {
        for (workload, runs) in [("warm", &result.warm), ("cold", &result.cold)] {
            let ours = runs.first().map_or(f64::NAN, |r| r.1.per_second());
            for (index, (system, m)) in runs.iter().enumerate() {
                table.row(vec![
                    mode.name.into(),
                    workload.into(),
                    (*system).into(),
                    fmt_rate(m.per_second()),
                    fmt_duration(m.p50()),
                    fmt_duration(m.p99()),
                    if index == 0 {
                        "–".into()
                    } else {
                        fmt_ratio(ratio(ours, m.per_second()))
                    },
                ]);
            }
        }
    }
    section.tables.push(table);

    let mut per_mode: Vec<String> = results
        .iter()
        .map(|(mode, result)| {
            let parts: Vec<String> = [("warm", &result.warm), ("cold", &result.cold)]
                .into_iter()
                .filter_map(|(workload, runs)| {
                    let (ours, name, m) = strongest(runs)?;
                    Some(format!(
                        "{workload} {} (vs {name}; p99 {} vs {})",
                        fmt_ratio(ratio(ours.per_second(), m.per_second())),
                        fmt_duration(ours.p99()),
                        fmt_duration(m.p99())
                    ))
                })
                .collect();
            format!("{}: {}", mode.name, parts.join(", "))
        })
        .collect();
    if let Some(why) = durable_not_run {
        per_mode.push(format!("durable: not run ({why})"));
    }
    section.ratio_line = format!(
        "Ratio to the stronger cqrs-es variant (commands/s) — {}.",
        per_mode.join("; ")
    );
    section.headline = headline(title, results, durable_not_run.is_some());
    section.notes.extend(notes(results));
    section
}

/// One mode's headline figures: mode, ours, the stronger cqrs-es variant's name and figures.
type Pair<'a> = (&'a str, &'a Measurement, &'static str, &'a Measurement);

/// The headline row: warm, ours against the stronger cqrs-es variant, both modes.
fn headline(
    title: &str,
    results: &[(&PgMode, ModeResult)],
    durable_missing: bool,
) -> Option<Headline> {
    let pairs: Vec<Pair<'_>> = results
        .iter()
        .filter_map(|(mode, result)| {
            let (ours, name, m) = strongest(&result.warm)?;
            Some((mode.name, ours, name, m))
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let join = |f: &dyn Fn(&Pair<'_>) -> String| {
        let mut parts: Vec<String> = pairs.iter().map(f).collect();
        if durable_missing {
            parts.push("not run".into());
        }
        parts.join(" / ")
    };
    Some(Headline {
        scenario: title.into(),
        metric: format!(
            "warm commands/s, {WARM_AGGREGATES} aggregates; {} (p99 ours {} / theirs {})",
            join(&|p| p.0.to_owned()),
            join(&|p| fmt_duration(p.1.p99())),
            join(&|p| fmt_duration(p.3.p99())),
        ),
        ours: join(&|p| fmt_rate(p.1.per_second())),
        baseline: {
            let variant = |name: &str| {
                name.trim_start_matches("cqrs-es (")
                    .trim_end_matches(')')
                    .to_owned()
            };
            let names = if pairs.iter().all(|p| p.2 == pairs[0].2) {
                variant(pairs[0].2)
            } else {
                join(&|p| variant(p.2))
            };
            format!("stronger cqrs-es variant ({names}), postgres-es")
        },
        baseline_figure: join(&|p| fmt_rate(p.3.per_second())),
        ratio: format!(
            "{} ↑",
            join(&|p| fmt_ratio(ratio(p.1.per_second(), p.3.per_second())))
        ),
    })
}

fn notes(results: &[(&PgMode, ModeResult)]) -> Vec<String> {
    let mut notes = Vec::new();
    let activation = results
        .iter()
        .map(|(mode, result)| {
            let a = &result.activations;
            format!(
                "{} {}",
                fmt_duration(a.total / u32::try_from(a.count.max(1)).unwrap_or(u32::MAX)),
                mode.name
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let replayed = results
        .first()
        .map_or(0, |(_, result)| result.activations.last_replayed);
    notes.push(format!(
        "Per command cqrs-es loads the aggregate (all its events, or its snapshot and the \
         events after it) and inserts the new events in a transaction (BEGIN, an INSERT per \
         event, COMMIT): four round trips or more; the event-sourced mode's read grows with the \
         history. Ours reads nothing on a warm aggregate: the actor holds the state and the \
         append is one statement (shared with other aggregates' appends by group commit). On a \
         cold aggregate ours first activates the actor: one statement reads the newest \
         snapshot and the events after it (here a snapshot taken when the seeding executor \
         passivated, and {replayed} events after it), shared with other activations' reads, \
         then the append: two round trips. The framework measured a mean \
         activation time of {activation} during the cold rounds."
    ));
    for (mode, result) in results {
        if let Some((ours, name, m)) = strongest(&result.cold)
            && ours.per_second() < m.per_second()
        {
            notes.push(format!(
                "Poor figure, explained ({}): on cold aggregates ours reaches {} of {name}. \
                 A cold command costs ours three statements in a row (newest snapshot, tail \
                 read, append), each waiting for the one before, against cqrs-es's load and \
                 transaction; on a loopback server round trips and per-statement overhead, \
                 not the work done, dominate (PROFILE.md §2). The actor pays this once per \
                 activation; every later command to the aggregate is a warm one.",
                mode.name,
                fmt_ratio(ratio(ours.per_second(), m.per_second()))
            ));
        }
    }
    notes
}
