//! The scenario's section of the report.

use super::*;

pub(super) fn section(ctx: &Ctx, title: &str, fwd: &Forwarding, scale: &Scaling) -> Section {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut section = Section::new(
        title,
        format!(
            "Every node is a `ClusterNode` (default 1 024 shards, 1 s heartbeat, 3 s TTL) with an \
             executor from `executor_builder` (fenced appends, shard placement, ledger registered \
             with `register_remote`, strategy `Never`), an `HttpTransport` and `cluster::serve` \
             on a loopback port; all nodes run **in this process**, on one tokio runtime, \
             against the same PostgreSQL server ({durability}, the server's own settings, as \
             for every PostgreSQL scenario of this report). A cluster is used only once its \
             ownership is stable (every shard owned, every node owning some and seeing every \
             member, then a full round of ticks that claimed and released nothing).\n\n\
             **Forwarding overhead.** Two nodes A and B on one database; {FORWARD_IDS} ids whose \
             shards A owns (B's route table points at A), activated on A; a pool of \
             {FORWARD_CONNECTIONS} connections per node. Rounds alternate \
             (A B A B …, {rounds} rounds, merged) between sending one-event deposits for those \
             ids to A, the owner (the baseline), and to B, which forwards each over HTTP/2 to A \
             and relays the answer. Same ids, callers (caller c → id c) and command; both end \
             in the same actor and the same fenced append on A. The baseline does less: no \
             placement miss on B, no MessagePack encoding of the call and the answer, no HTTP/2 \
             round trip over loopback, no request handling on A's server.\n\n\
             **3 nodes vs 1 node.** The same workload, {aggregates} ledger aggregates (all \
             activated first), {WORKLOAD_CALLERS} callers each sending deposits to ids drawn \
             at random (the same pseudo-random sequence on every system), callers spread evenly \
             over the entry nodes, on a 1-node cluster (the baseline) and a 3-node cluster. \
             Each cluster lives in its own database and both stay up for the whole part, so \
             the alternating rounds never wait for a join or a leave and neither cluster's \
             ownership moves (checked); nodes have the same settings and a pool of \
             {WORKLOAD_CONNECTIONS} connections each (more than the callers, so the pool never \
             limits). The baseline does less: every id is local (no forwarding), one \
             heartbeat loop instead of three. A plain executor (no cluster: unfenced appends, \
             no placement) runs in the same rounds as a diagnostic. On this {cpus}-CPU \
             machine the three nodes share the CPUs and PostgreSQL, so this prices what the \
             cluster machinery adds to a 1-node cluster (routing, forwarding about two thirds of \
             the commands, three heartbeat loops), not scale-out; the plain executor prices \
             what even a 1-node cluster adds (fenced appends, placement).",
            durability = fwd.durability,
            rounds = rounds(ctx),
            aggregates = fmt_count(scale.aggregates as u64),
        ),
    );

    let mut forward_table = Table::new(
        "Forwarding: commands for ids owned by node A, sent to A or to B",
        &[
            "callers",
            "sent to",
            "cmd/s",
            "p50",
            "p99",
            "p50 ÷ local",
            "p99 ÷ local",
            "cmd/s ÷ local",
        ],
    );
    for level in &fwd.levels {
        for (name, m, is_base) in [
            ("A, the owner (local)", &level.local, true),
            ("B → A (forwarded)", &level.forwarded, false),
        ] {
            let base = &level.local;
            let cell = |r: f64| {
                if is_base {
                    "–".to_owned()
                } else {
                    fmt_ratio(r)
                }
            };
            forward_table.row(vec![
                level.callers.to_string(),
                name.into(),
                fmt_rate(m.per_second()),
                fmt_duration(m.p50()),
                fmt_duration(m.p99()),
                cell(ratio(m.p50().as_secs_f64(), base.p50().as_secs_f64())),
                cell(ratio(m.p99().as_secs_f64(), base.p99().as_secs_f64())),
                cell(ratio(m.per_second(), base.per_second())),
            ]);
        }
    }
    section.tables.push(forward_table);

    let one_node = scale.rows.iter().find(|r| r.system == ONE_NODE);
    let mut scale_table = Table::new(
        format!(
            "3 nodes vs 1 node: {} aggregates, {WORKLOAD_CALLERS} callers, random ids",
            fmt_count(scale.aggregates as u64)
        ),
        &[
            "system",
            "entry nodes",
            "cmd/s",
            "p50",
            "p99",
            "commands sent to a non-owner",
            "cmd/s ÷ 1 node",
        ],
    );
    for row in &scale.rows {
        scale_table.row(vec![
            row.system.into(),
            row.entries.to_string(),
            fmt_rate(row.measured.per_second()),
            fmt_duration(row.measured.p50()),
            fmt_duration(row.measured.p99()),
            row.forwarded_share
                .map_or("–".into(), |s| format!("{:.1} %", s * 100.0)),
            match one_node {
                Some(base) if row.system != ONE_NODE => {
                    fmt_ratio(ratio(row.measured.per_second(), base.measured.per_second()))
                }
                _ => "–".into(),
            },
        ]);
    }
    section.tables.push(scale_table);

    let level = |callers: usize| fwd.levels.iter().find(|l| l.callers == callers);
    let p50_ratio =
        |l: &ForwardLevel| ratio(l.forwarded.p50().as_secs_f64(), l.local.p50().as_secs_f64());
    let three = scale.rows.iter().find(|r| r.system == THREE_NODES);
    let scale_ratio = match (three, one_node) {
        (Some(t), Some(o)) => ratio(t.measured.per_second(), o.measured.per_second()),
        _ => f64::NAN,
    };
    section.ratio_line = format!(
        "Ratio: forwarded ÷ local p50 {} (cmd/s {}) at {} caller(s); 3 nodes ÷ 1 node cmd/s {} \
         with {} of commands sent to a non-owner.",
        fwd.levels
            .iter()
            .map(|l| fmt_ratio(p50_ratio(l)))
            .collect::<Vec<_>>()
            .join(" / "),
        fwd.levels
            .iter()
            .map(|l| fmt_ratio(ratio(l.forwarded.per_second(), l.local.per_second())))
            .collect::<Vec<_>>()
            .join(" / "),
        fwd.levels
            .iter()
            .map(|l| l.callers.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        fmt_ratio(scale_ratio),
        three
            .and_then(|t| t.forwarded_share)
            .map_or("n/a".into(), |s| format!("{:.1} %", s * 100.0)),
    );
    if let Some(l) = level(1) {
        section.headline = Some(Headline {
            scenario: title.into(),
            metric: format!(
                "p50 command latency, 1 caller, sent to a non-owner (forwarded over HTTP/2) \
                 (3 nodes ÷ 1 node cmd/s: {})",
                fmt_ratio(scale_ratio)
            ),
            ours: fmt_duration(l.forwarded.p50()),
            baseline: "same command sent to the owner".into(),
            baseline_figure: fmt_duration(l.local.p50()),
            ratio: format!("{} ↓", fmt_ratio(p50_ratio(l))),
        });
        section.notes.push(format!(
            "A forwarded command costs about {} more at the median with one caller (p50 {} vs \
             {}); that is the price of the hop (placement miss, MessagePack call and answer, \
             an HTTP/2 request over loopback, the server's handling).{}",
            fmt_duration(l.forwarded.p50().saturating_sub(l.local.p50())),
            fmt_duration(l.forwarded.p50()),
            fmt_duration(l.local.p50()),
            if fwd.durability.contains("fsync=off") {
                " Here it comes on top of an append that does not wait for a disk flush \
                 (fsync off); with fsync on, every append gets slower by the flush while the \
                 hop stays the same, so the ratio here is the unfavourable case."
            } else {
                ""
            },
        ));
    }
    if let Some(l) = level(FORWARD_IDS) {
        section.notes.push(format!(
            "With {} callers the forwarded side reaches {} of the local throughput: node B's \
             client and A's server share the same {cpus} CPUs as the owner's actors and \
             PostgreSQL, so the hop's CPU cost comes straight out of the throughput.",
            l.callers,
            fmt_ratio(ratio(l.forwarded.per_second(), l.local.per_second())),
        ));
    }
    let tail_noise: Vec<String> = fwd
        .levels
        .iter()
        .filter(|l| l.forwarded.p99() < l.local.p99())
        .map(|l| l.callers.to_string())
        .collect();
    if !tail_noise.is_empty() {
        section.notes.push(format!(
            "At {} caller(s) the forwarded p99 came out below the local one: the tail is \
             PostgreSQL's and the machine's (both sides end in the same append), and a run this \
             short holds few tail samples, so that difference is noise, not a gain.",
            tail_noise.join(" and ")
        ));
    }
    if let (Some(t), Some(o)) = (three, one_node) {
        let plain = scale.rows.iter().find(|r| r.system == PLAIN);
        section.notes.push(format!(
            "3 nodes vs 1: {} of the 1-node throughput, with {} of commands entering at a \
             non-owner; the 1-node cluster itself runs at {} of the plain executor's throughput \
             (what fencing, placement and the heartbeat loop cost). In-process nodes on {cpus} \
             CPUs cannot scale out: a real deployment puts each node on its own machine.",
            fmt_ratio(scale_ratio),
            t.forwarded_share
                .map_or("n/a".into(), |s| format!("{:.1} %", s * 100.0)),
            plain.map_or("n/a".into(), |p| fmt_ratio(ratio(
                o.measured.per_second(),
                p.measured.per_second()
            ))),
        ));
    }
    section.notes.push(format!(
        "Checks: clusters settled in {} (2 nodes), {} (1 node) and {} (3 nodes, shards {:?}; \
         2 nodes: {:?}); node A made {} forwarded calls during its runs (0 means the baseline was \
         local), node B made {} ({} unanswered); the 1-node cluster made {} forwarded calls, the \
         3-node cluster {} for {} commands its callers sent to a non-owner (warm-up included); \
         ownership moved during the runs: {}; self-fences: {}.",
        fmt_duration(fwd.settle),
        fmt_duration(scale.settle_one),
        fmt_duration(scale.settle_three),
        scale.shards_three,
        fwd.shards,
        fmt_count(fwd.a_calls),
        fmt_count(fwd.b_calls),
        fmt_count(fwd.b_failed),
        fmt_count(scale.single_calls),
        fmt_count(scale.trio_calls),
        fmt_count(
            scale
                .rows
                .iter()
                .find(|r| r.system == THREE_NODES)
                .map_or(0, |r| r.forwarded)
        ),
        if fwd.moved || scale.moved {
            "yes"
        } else {
            "no"
        },
        fwd.self_fences + scale.self_fences,
    ));
    section
}
