//! Scenario 5's section: a row per backend, state size and strategy with the merged figures and
//! their spread over the rounds; the ratio and headline lines for both sizes; the encode costs.

use std::time::Duration;

use aggregate_actors::codec::{self, CompressionConfig};

use crate::BoxError;
use crate::figures::{fmt_bytes, fmt_count, fmt_duration, fmt_rate, fmt_ratio, ratio};
use crate::ledger::{LedgerState, STATEMENT_LINES, StatementState, seeded_event};
use crate::measure::{Measurement, min_max, run_callers};
use crate::report::{Headline, Section, Table};

use super::{AGGREGATES, CONFIGS, Config, EVERY, Series, Size, Timing};

/// One backend's results: its name, its timing and a series per [`CONFIGS`] entry.
pub(super) type BackendResult = (&'static str, Timing, Vec<Series>);

/// `lo–hi` of some figures.
fn range(values: impl IntoIterator<Item = f64>, fmt: impl Fn(f64) -> String) -> String {
    let (lo, hi) = min_max(values);
    format!("{}–{}", fmt(lo), fmt(hi))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn fmt_secs(s: f64) -> String {
    fmt_duration(Duration::from_secs_f64(s.max(0.0)))
}

/// The series of `size` with and without snapshots.
fn pair(series: &[Series], size: Size) -> Option<(&Series, &Series)> {
    let find = |snapshots| {
        CONFIGS
            .iter()
            .position(|c| *c == Config { size, snapshots })
            .and_then(|i| series.get(i))
    };
    Some((find(false)?, find(true)?))
}

/// p99 with snapshots ÷ without: merged, and each round's (the runs of one round paired).
fn p99_ratios(never: &Series, every: &Series) -> Option<(f64, Vec<f64>)> {
    let merged = ratio(
        secs(every.merged.as_ref()?.p99()),
        secs(never.merged.as_ref()?.p99()),
    );
    let rounds = never
        .rounds
        .iter()
        .zip(&every.rounds)
        .map(|(n, e)| ratio(secs(e.p99()), secs(n.p99())))
        .collect();
    Some((merged, rounds))
}

/// Mean time of encoding `state` (and, if `seal`, compressing and checksumming it as the
/// background writer does).
async fn encode_time<S>(state: S, seal: bool) -> Result<Duration, BoxError>
where
    S: serde::Serialize + Clone + Send + Sync + 'static,
{
    let config = CompressionConfig::default();
    Ok(run_callers(
        1,
        Duration::ZERO,
        Duration::from_millis(200),
        move |_, _| {
            let state = state.clone();
            async move {
                let encoded = codec::encode(&state)?;
                if seal {
                    std::hint::black_box(codec::seal(encoded, &config)?);
                } else {
                    std::hint::black_box(encoded);
                }
                Ok(())
            }
        },
    )
    .await?
    .mean())
}

/// The whole section.
pub(super) async fn section(
    rounds: usize,
    seed: u64,
    results: &[BackendResult],
) -> Result<Section, BoxError> {
    let mut small = LedgerState::default();
    for i in 0..1_000 {
        small.apply(&seeded_event(i));
    }
    let large = StatementState::default();
    let small_bytes = codec::encode(&small)?.len();
    let large_bytes = codec::encode(&large)?.len();
    let label = |size: Size| match size {
        Size::Small => format!("account ({})", fmt_bytes(small_bytes as f64)),
        Size::Large => format!(
            "account + {STATEMENT_LINES} statement lines ({})",
            fmt_bytes(large_bytes as f64)
        ),
    };
    let timings = results
        .iter()
        .map(|(name, t, _)| {
            format!(
                "{name} {} + {} warm-up",
                fmt_duration(t.duration),
                fmt_duration(t.warmup)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut section = Section::new(
        super::super::ALL[4].title,
        format!(
            "{AGGREGATES} aggregates, one caller each, one-event deposits; strategy \
             `EveryNEvents({EVERY})` against `Never` (no passivation snapshots), for two states: \
             the ledger account (balance, counters, the last 16 transactions: {}, as a real \
             account's would be) and the same account carrying its last {STATEMENT_LINES} \
             statement lines ({}; above the 4 KiB threshold, so the writer compresses it). \
             {rounds} rounds; in each, the four runs (two states × two strategies, each on a \
             fresh executor) go in a random order (shuffle seed {seed}); runs: {timings}. \
             Figures are each configuration's rounds merged; the ranges are the smallest and \
             largest of the single rounds, and \"p99 ÷ never\" pairs the two runs of one state \
             in the same round.",
            fmt_bytes(small_bytes as f64),
            fmt_bytes(large_bytes as f64),
        ),
    );

    let mut table = Table::new(
        "",
        &[
            "backend",
            "state",
            "strategy",
            "cmd/s",
            "cmd/s, rounds",
            "p50",
            "p99",
            "p99, rounds",
            "p99.9",
            "snapshots written",
            "p99 ÷ never (rounds)",
        ],
    );
    let mut ratio_parts = Vec::new();
    for (name, _, series) in results {
        for size in [Size::Small, Size::Large] {
            let Some((never, every)) = pair(series, size) else {
                continue;
            };
            let ratios = p99_ratios(never, every);
            for (strategy, s) in [("never", never), ("every 100 events", every)] {
                let Some(m) = &s.merged else { continue };
                table.row(vec![
                    (*name).into(),
                    label(size),
                    strategy.into(),
                    fmt_rate(m.per_second()),
                    range(s.rounds.iter().map(Measurement::per_second), fmt_rate),
                    fmt_duration(m.p50()),
                    fmt_duration(m.p99()),
                    range(s.rounds.iter().map(|r| secs(r.p99())), fmt_secs),
                    fmt_duration(m.quantile(0.999)),
                    fmt_count(s.snapshots),
                    match (&ratios, strategy) {
                        (Some((merged, rounds)), "every 100 events") => format!(
                            "{} ({})",
                            fmt_ratio(*merged),
                            range(rounds.iter().copied(), fmt_ratio)
                        ),
                        _ => "–".into(),
                    },
                ]);
            }
            if let Some((merged, rounds)) = &ratios {
                println!(
                    "  snapshot-cost: {name}, {}: p99 every {EVERY} ÷ never {}",
                    label(size),
                    fmt_ratio(*merged)
                );
                ratio_parts.push(format!(
                    "{name}, {} {} (rounds {})",
                    match size {
                        Size::Small => fmt_bytes(small_bytes as f64),
                        Size::Large => fmt_bytes(large_bytes as f64),
                    },
                    fmt_ratio(*merged),
                    range(rounds.iter().copied(), fmt_ratio)
                ));
            }
        }
    }
    section.tables.push(table);
    section.ratio_line = format!(
        "Ratio (p99 with a snapshot every {EVERY} events ÷ p99 without): {}.",
        ratio_parts.join("; ")
    );
    section.headline = headline(&section.title, results, small_bytes, large_bytes);

    let small_encode = encode_time(small, false).await?;
    let large_encode = encode_time(large.clone(), false).await?;
    let large_seal = encode_time(large, true).await?;
    section.notes.push(format!(
        "On the actor's turn a snapshot costs one MessagePack encode of the state, once per \
         {EVERY} commands: {} for the {} account, {} for the {} one. Compression, checksum and \
         the store write run on the background writer (encode + zstd + checksum of the large \
         state: {}), sharing the CPU with the callers. A difference in p99 inside the rounds' \
         range is noise, not a cost.",
        fmt_duration(small_encode),
        fmt_bytes(small_bytes as f64),
        fmt_duration(large_encode),
        fmt_bytes(large_bytes as f64),
        fmt_duration(large_seal),
    ));
    for (name, timing, series) in results {
        let Some((never, every)) = pair(series, Size::Large) else {
            continue;
        };
        let (Some((merged, _)), Some(m)) = (p99_ratios(never, every), &every.merged) else {
            continue;
        };
        if merged < 1.5 {
            continue;
        }
        let small_in_noise = pair(series, Size::Small)
            .and_then(|(n, e)| p99_ratios(n, e))
            .is_some_and(|(_, rounds)| {
                let (lo, hi) = min_max(rounds);
                lo <= 1.0 && 1.0 <= hi
            });
        let measured = secs(m.elapsed) + secs(timing.warmup) * every.rounds.len() as f64;
        let per_second = every.snapshots as f64 / measured.max(1e-9);
        section.notes.push(format!(
            "Poor figure, explained ({name}, {} state): p99 is {} of never's. At {} commands/s \
             a snapshot every {EVERY} events is about {} snapshots/s: {} of encoding on the \
             actors' turns (each holds its aggregate's mailbox for {}) and {} of compression \
             and checksum on the writer, per second of a {}-CPU machine; a state under 256 KiB \
             is compressed on a runtime worker, the threads the callers run on{}. A state this \
             large wants a sparser strategy (every 1 000 events, or by time) or a cheaper \
             encoding{}.",
            fmt_bytes(large_bytes as f64),
            fmt_ratio(merged),
            fmt_rate(m.per_second()).trim_end_matches("/s"),
            crate::figures::sig3(per_second),
            fmt_secs(per_second * secs(large_encode)),
            fmt_duration(large_encode),
            fmt_secs(per_second * secs(large_seal.saturating_sub(large_encode))),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            if *name == "PostgreSQL" {
                "; and the snapshot writes (with their read-back verification) share the pool \
                 and the server with the appends"
            } else {
                ""
            },
            if small_in_noise {
                "; the small account's per-round ratios straddle 1×: its cost is inside the noise"
            } else {
                ""
            },
        ));
    }
    Ok(section)
}

/// The headline row: p99 on the last backend (PostgreSQL when there is one), both sizes.
fn headline(
    title: &str,
    results: &[BackendResult],
    small_bytes: usize,
    large_bytes: usize,
) -> Option<Headline> {
    let (name, _, series) = results.last()?;
    let mut ours = Vec::new();
    let mut never_p99 = Vec::new();
    let mut ratios = Vec::new();
    let mut spreads = Vec::new();
    for size in [Size::Small, Size::Large] {
        let (never, every) = pair(series, size)?;
        let (merged, rounds) = p99_ratios(never, every)?;
        ours.push(fmt_duration(every.merged.as_ref()?.p99()));
        never_p99.push(fmt_duration(never.merged.as_ref()?.p99()));
        ratios.push(fmt_ratio(merged));
        spreads.push(range(rounds, fmt_ratio));
    }
    Some(Headline {
        scenario: title.into(),
        metric: format!(
            "p99 command latency, {name}, {AGGREGATES} aggregates; state {} / {} (per-round \
             ratio {})",
            fmt_bytes(small_bytes as f64),
            fmt_bytes(large_bytes as f64),
            spreads.join(" / ")
        ),
        ours: format!("{} (every {EVERY})", ours.join(" / ")),
        baseline: "same, snapshots never".into(),
        baseline_figure: never_p99.join(" / "),
        ratio: format!("{} ↓", ratios.join(" / ")),
    })
}
