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
use crate::measure::{fmt_bytes, fmt_count, fmt_rate, fmt_ratio, ratio, sig3};
use crate::probe::{ProbeResult, run_in_child};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;

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
                "memory per live idle actor, {} actors (activations/s {} vs {})",
                fmt_count(ours.count),
                fmt_rate(ours.activations_per_second()),
                fmt_rate(ractor.activations_per_second())
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
