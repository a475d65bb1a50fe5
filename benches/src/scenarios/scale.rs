//! Scenario 6: scale — memory per live idle aggregate actor and activations per second.
//!
//! Each measurement runs in a child process (see [`crate::probe`]): it activates a few thousand
//! actors, reads its RSS from `/proc/self/statm`, activates N more with 64 concurrent callers
//! (timed: activations per second), reads RSS again and reports (after − before) / N. Ours is
//! an aggregate actor activated by a command that emits nothing (no events stored, so the
//! figure is the actor's, not the store's); baselines: the same count of raw ractor actors
//! holding a counter (spawned and called once), and the `actor-runtime` directory alone with a
//! counter virtual actor.

use crate::BoxError;
use crate::figures::{fmt_bytes, fmt_count, fmt_rate, fmt_ratio, ratio, sig3};
use crate::probe::{ProbeResult, run_in_child};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;
use crate::tiers::{self, HOT_CAP, IDLE, READ_BATCH, TierProbe};

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let counts: Vec<u64> = if ctx.quick {
        vec![100_000]
    } else {
        vec![100_000, 1_000_000]
    };
    let mut section = Section::new(
        super::ALL[5].title,
        "Each figure comes from a child process (so memory freed by one measurement cannot \
         hide the next one's): it activates 2 000 actors, reads RSS (`/proc/self/statm`), \
         activates N more with 64 concurrent callers (timed), reads RSS again. Ours: aggregate \
         actors of the in-memory executor, activated by a command that emits no event (nothing \
         stored, so the figure is the live actor's: slot, ractor actor and task, mailbox, \
         state). Baselines: raw ractor actors holding a counter (spawned, called once, refs \
         kept), and the `actor-runtime` directory alone with a counter virtual actor. Idle \
         passivation is off so every actor stays live.",
    );
    let mut table = Table::new(
        "",
        &[
            "live actors",
            "kind",
            "RSS delta",
            "bytes per actor",
            "activations/s",
            "memory ÷ ractor",
            "activations/s ÷ ractor",
        ],
    );
    let mut last: Option<(ProbeResult, ProbeResult, ProbeResult)> = None;
    for &count in &counts {
        let ours = run_in_child("ours", count).await?;
        let directory = run_in_child("directory", count).await?;
        let ractor = run_in_child("ractor", count).await?;
        for (label, r) in [
            ("ours (aggregate actor)", &ours),
            ("actor-runtime directory (counter)", &directory),
            ("raw ractor (counter)", &ractor),
        ] {
            println!(
                "  scale: {} {label}: {} per actor, {}",
                fmt_count(count),
                fmt_bytes(r.bytes_per_actor()),
                fmt_rate(r.activations_per_second())
            );
            table.row(vec![
                fmt_count(count),
                label.into(),
                fmt_bytes(r.rss_after.saturating_sub(r.rss_before) as f64),
                fmt_bytes(r.bytes_per_actor()),
                fmt_rate(r.activations_per_second()),
                fmt_ratio(ratio(r.bytes_per_actor(), ractor.bytes_per_actor())),
                fmt_ratio(ratio(
                    r.activations_per_second(),
                    ractor.activations_per_second(),
                )),
            ]);
        }
        last = Some((ours, directory, ractor));
    }
    section.tables.push(table);
    let tiered = tier_table(&counts, &mut section).await?;
    if let Some((ours, directory, ractor)) = last {
        let memory = ratio(ours.bytes_per_actor(), ractor.bytes_per_actor());
        let speed = ratio(
            ours.activations_per_second(),
            ractor.activations_per_second(),
        );
        section.ratio_line = format!(
            "Ratio to raw ractor at {} live actors: memory per actor {} ({} vs {}), activations/s {} ({} vs {}).",
            fmt_count(ours.count),
            fmt_ratio(memory),
            fmt_bytes(ours.bytes_per_actor()),
            fmt_bytes(ractor.bytes_per_actor()),
            fmt_ratio(speed),
            fmt_rate(ours.activations_per_second()),
            fmt_rate(ractor.activations_per_second()),
        );
        section.headline = Some(Headline {
            scenario: section.title.clone(),
            metric: format!(
                "memory per live idle actor, {} actors (activations/s {} vs {}){}",
                fmt_count(ours.count),
                fmt_rate(ours.activations_per_second()),
                fmt_rate(ractor.activations_per_second()),
                tiered
                    .as_ref()
                    .map(|(resident, cold)| format!(
                        "; resident tier: {} per resident aggregate, promotions {} vs {} from the store",
                        fmt_bytes(resident_bytes_each(resident, cold)),
                        fmt_rate(resident.activations_per_second()),
                        fmt_rate(cold.activations_per_second())
                    ))
                    .unwrap_or_default()
            ),
            ours: fmt_bytes(ours.bytes_per_actor()),
            baseline: "raw ractor actor (counter)".into(),
            baseline_figure: fmt_bytes(ractor.bytes_per_actor()),
            ratio: format!("{} ↓", fmt_ratio(memory)),
        });
        let directory_share = directory.bytes_per_actor() - ractor.bytes_per_actor();
        let aggregate_share = ours.bytes_per_actor() - directory.bytes_per_actor();
        section.notes.push(format!(
            "Of ours' {} per actor, the ractor actor itself (task, mailbox channels, actor \
             cell) accounts for {}, the virtual-actor directory adds {} (map entry, slot, \
             mailbox counter, key) and the aggregate actor {} (stream id, state, activation \
             report, context handle). {} live aggregates fit in 1 GiB.",
            fmt_bytes(ours.bytes_per_actor()),
            fmt_bytes(ractor.bytes_per_actor()),
            fmt_bytes(directory_share),
            fmt_bytes(aggregate_share),
            fmt_count((1024.0 * 1024.0 * 1024.0 / ours.bytes_per_actor().max(1.0)) as u64),
        ));
        section.notes.push(format!(
            "An activation of ours does what a raw spawn does plus a snapshot lookup and a \
             stream read (empty here) and the directory's bookkeeping; at {} it runs at {} of \
             the raw spawn rate, with at most 64 activations in flight (the runtime's \
             `max_concurrent_activations`).",
            fmt_rate(ours.activations_per_second()),
            sig3(speed)
        ));
    }
    Ok(section)
}

/// Heap bytes per resident aggregate: the tier-on child's heap growth less the tier-off
/// child's (both stored the same events), per aggregate.
fn resident_bytes_each(resident: &TierProbe, cold: &TierProbe) -> f64 {
    resident.heap_growth.saturating_sub(cold.heap_growth) as f64 / resident.count.max(1) as f64
}

/// The same from the RSS growth (which also holds what the allocator keeps after frees).
fn resident_rss_each(resident: &TierProbe, cold: &TierProbe) -> f64 {
    resident.rss_growth.saturating_sub(cold.rss_growth) as f64 / resident.count.max(1) as f64
}

/// A tier-on and a tier-off child at `count` aggregates, the tier-on one first if
/// `resident_first`; returns (tier on, tier off).
async fn tier_pair(count: u64, resident_first: bool) -> Result<(TierProbe, TierProbe), BoxError> {
    if resident_first {
        let resident = tiers::run_in_child(true, count).await?;
        Ok((resident, tiers::run_in_child(false, count).await?))
    } else {
        let cold = tiers::run_in_child(false, count).await?;
        Ok((tiers::run_in_child(true, count).await?, cold))
    }
}

/// The resident tier's table: memory per resident aggregate and promotions per second against
/// activations from the store, at each count. Returns the largest count's pair.
async fn tier_table(
    counts: &[u64],
    section: &mut Section,
) -> Result<Option<(TierProbe, TierProbe)>, BoxError> {
    let mut table = Table::new(
        "Tiered residency: aggregates kept in memory without an actor",
        &[
            "aggregates",
            "tier",
            "heap growth",
            "RSS growth",
            "process RSS",
            "per resident (heap, vs tier off)",
            "per resident (RSS, vs tier off)",
            "charged to the budget, each",
            "activations/s when read (median of batches)",
            "of them without a store read",
        ],
    );
    let mut last = None;
    for (index, &count) in counts.iter().enumerate() {
        // Alternate which child goes first, so neither always runs on a warmer machine.
        let (mut resident, mut cold) = tier_pair(count, count % 2 == 0).await?;
        if index + 1 == counts.len() {
            // The headline's count: a second pair in the other order, whose read batches join
            // the first pair's (memory stays the first pair's), so that each rate is a median
            // over two children run on, off, off, on (or the reverse).
            let (again_resident, again_cold) = tier_pair(count, count % 2 != 0).await?;
            resident.batch_rates.extend(again_resident.batch_rates);
            cold.batch_rates.extend(again_cold.batch_rates);
            resident.read_activations += again_resident.read_activations;
            resident.read_promotions += again_resident.read_promotions;
            cold.read_activations += again_cold.read_activations;
            cold.read_promotions += again_cold.read_promotions;
        }
        let each = resident_bytes_each(&resident, &cold);
        println!(
            "  scale: {} resident: {} each, promotions {} vs store activations {}",
            fmt_count(count),
            fmt_bytes(each),
            fmt_rate(resident.activations_per_second()),
            fmt_rate(cold.activations_per_second())
        );
        for probe in [&resident, &cold] {
            table.row(vec![
                fmt_count(count),
                if probe.resident {
                    "on (resident)"
                } else {
                    "off (cold)"
                }
                .into(),
                fmt_bytes(probe.heap_growth as f64),
                fmt_bytes(probe.rss_growth as f64),
                fmt_bytes(probe.rss_total as f64),
                if probe.resident {
                    fmt_bytes(each)
                } else {
                    "–".into()
                },
                if probe.resident {
                    fmt_bytes(resident_rss_each(&resident, &cold))
                } else {
                    "–".into()
                },
                if probe.resident_entries > 0 {
                    fmt_bytes(probe.resident_bytes as f64 / probe.resident_entries as f64)
                } else {
                    "–".into()
                },
                fmt_rate(probe.activations_per_second()),
                format!(
                    "{} of {}",
                    fmt_count(probe.read_promotions),
                    fmt_count(probe.read_activations)
                ),
            ]);
        }
        last = Some((resident, cold));
    }
    section.tables.push(table);
    if let Some((resident, cold)) = &last {
        section.notes.push(format!(
            "Resident tier: two more children (the `tier-probe` binary, whose allocator counts \
             the heap bytes in use) fill {} ledger accounts each with three commands (deposit, \
             deposit, withdraw: three events, three recent transactions in the state, three \
             command ids in the deduplication window); actors passivate after {} without \
             traffic or are evicted beyond {} live ones, leaving the account resident with the \
             tier on and nothing with it off. \
             Once no actor is live, both read the heap in use and the RSS. Both stored the same \
             events in the same in-memory store, so the difference of their heap growth, {} per \
             aggregate ({} by RSS), is what a resident entry costs: its id, its state (kept decoded, as the actor held \
             it: its encoding is below the default 1 KiB threshold), its deduplication window as \
             fixed-size records, version \
             and snapshot bookkeeping, its place in the tier's map and order. The whole process held {} of RSS with {} resident \
             aggregates and their events. Then each reads accounts' states with 64 callers, in \
             batches of {} distinct accounts with every actor passivated between batches (so no \
             eviction or demotion runs beside the reads), {} batches each (at this count, over two \
             children per side, run alternately: on, off, off, on or the reverse); a rate is \
             the median of its batches' rates (promotions: {} to {} over the batches): {} promotions from \
             the tier (an actor spawned from the entry, no store read) against {} activations \
             from the store with the tier off (snapshot lookup, stream read, replay of three \
             events), {}.",
            fmt_count(resident.count),
            humantime_ms(IDLE),
            fmt_count(HOT_CAP as u64),
            fmt_bytes(resident_bytes_each(resident, cold)),
            fmt_bytes(resident_rss_each(resident, cold)),
            fmt_bytes(resident.rss_total as f64),
            fmt_count(resident.resident_entries),
            fmt_count(READ_BATCH as u64),
            fmt_count(resident.batch_rates.len() as u64),
            fmt_rate(
                resident
                    .batch_rates
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
            ),
            fmt_rate(resident.batch_rates.iter().copied().fold(0.0, f64::max)),
            fmt_rate(resident.activations_per_second()),
            fmt_rate(cold.activations_per_second()),
            fmt_ratio(ratio(
                resident.activations_per_second(),
                cold.activations_per_second()
            )),
        ));
    }
    Ok(last)
}

fn humantime_ms(duration: std::time::Duration) -> String {
    format!("{} ms", duration.as_millis())
}
