//! Part 1: commands for ids owned by node A, sent to A (local) or to B (forwarded).

use super::*;

/// Caller `c` sends a one-event deposit to `ids[c]` through `executor`.
pub(super) fn deposit_op(executor: &Executor, ids: &Arc<Vec<String>>) -> Op {
    let executor = executor.clone();
    let ids = Arc::clone(ids);
    op(move |caller, _| {
        let executor = executor.clone();
        let ids = Arc::clone(&ids);
        async move {
            executor
                .execute::<Ledger>(
                    &ids[caller % ids.len()],
                    LedgerCommand::Deposit { amount: 1 },
                )
                .await?;
            Ok(())
        }
    })
}

/// The forwarding figures at one caller count.
pub(super) struct ForwardLevel {
    pub(super) callers: usize,
    pub(super) local: Measurement,
    pub(super) forwarded: Measurement,
}

/// What the forwarding part measured.
pub(super) struct Forwarding {
    pub(super) levels: Vec<ForwardLevel>,
    pub(super) settle: Duration,
    pub(super) shards: Vec<usize>,
    /// Calls A's transport made during the runs (the baseline must make none).
    pub(super) a_calls: u64,
    /// Calls B's transport made, and how many were not answered.
    pub(super) b_calls: u64,
    pub(super) b_failed: u64,
    /// Whether ownership moved during the runs.
    pub(super) moved: bool,
    pub(super) self_fences: u64,
    pub(super) durability: String,
}

/// Part 1: two nodes, ids owned by A, commands sent to A (local) or B (forwarded).
pub(super) async fn forwarding(ctx: &Ctx, url: &str) -> Result<Forwarding, BoxError> {
    let (nodes, settle) = start_cluster(url, 2, FORWARD_CONNECTIONS).await?;
    let outcome = forwarding_runs(ctx, &nodes, settle).await;
    stop_all(nodes).await;
    outcome
}

pub(super) async fn forwarding_runs(
    ctx: &Ctx,
    nodes: &[Node],
    settle: Duration,
) -> Result<Forwarding, BoxError> {
    let [a, b] = nodes else {
        return Err("the forwarding runs need two nodes".into());
    };
    let durability = durability(&a.events).await?;
    let shards = nodes
        .iter()
        .map(|n| n.cluster.stats().shards_owned)
        .collect();
    let ids = ids_owned_by(a, b, "fwd", FORWARD_IDS)?;
    activate_all(&a.executor, &ids).await?;
    let moves_before = moves(nodes);
    let (a_before, b_before) = (a.transport.stats(), b.transport.stats());
    let mut levels = Vec::new();
    for callers in FORWARD_CALLERS {
        let measured = run_alternating(
            callers,
            rounds(ctx),
            ctx.warmup(),
            ctx.pg_duration(),
            &[deposit_op(&a.executor, &ids), deposit_op(&b.executor, &ids)],
        )
        .await?;
        let [local, forwarded] =
            <[Measurement; 2]>::try_from(measured).map_err(|_| "expected two measurements")?;
        println!(
            "  cluster: forwarding, {callers} caller(s): local p50 {} {} vs forwarded p50 {} {}",
            fmt_duration(local.p50()),
            fmt_rate(local.per_second()),
            fmt_duration(forwarded.p50()),
            fmt_rate(forwarded.per_second()),
        );
        levels.push(ForwardLevel {
            callers,
            local,
            forwarded,
        });
    }
    let (a_after, b_after) = (a.transport.stats(), b.transport.stats());
    Ok(Forwarding {
        levels,
        settle,
        shards,
        a_calls: calls(a_after) - calls(a_before),
        b_calls: calls(b_after) - calls(b_before),
        b_failed: (b_after.lost + b_after.unreachable) - (b_before.lost + b_before.unreachable),
        moved: moves(nodes) != moves_before,
        self_fences: nodes.iter().map(|n| n.cluster.stats().self_fences).sum(),
        durability,
    })
}
