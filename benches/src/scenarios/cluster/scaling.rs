//! Part 2: the same workload on a 1-node and a 3-node cluster (and a plain executor).

use super::*;

/// A 64-bit mix of (caller, iteration): the workload's "random" id, the same sequence for
/// every system (splitmix64).
pub(super) fn mix(caller: usize, iteration: u64) -> u64 {
    let mut z = ((caller as u64) << 40 ^ iteration).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How many commands a workload sent, and how many of them went to a node that does not own
/// their aggregate (and so were forwarded).
#[derive(Default)]
pub(super) struct Sent {
    pub(super) total: AtomicU64,
    pub(super) forwarded: AtomicU64,
}

impl Sent {
    pub(super) fn share(&self) -> f64 {
        ratio(
            self.forwarded.load(Ordering::Relaxed) as f64,
            self.total.load(Ordering::Relaxed) as f64,
        )
    }
}

/// One entry point of a workload: an executor, and the cluster node it belongs to (none for
/// the plain executor).
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) executor: Executor,
    pub(super) node: Option<ClusterNode>,
}

/// Caller `c` enters at `entries[c mod entries]` and sends a deposit to a random one of `ids`.
pub(super) fn workload_op(entries: Vec<Entry>, ids: &Arc<Vec<String>>, sent: &Arc<Sent>) -> Op {
    let entries = Arc::new(entries);
    let ids = Arc::clone(ids);
    let sent = Arc::clone(sent);
    op(move |caller, iteration| {
        let entry = entries[caller % entries.len()].clone();
        let index = (mix(caller, iteration) % ids.len() as u64) as usize;
        let ids = Arc::clone(&ids);
        sent.total.fetch_add(1, Ordering::Relaxed);
        if let Some(node) = &entry.node
            && node.route(Ledger::TYPE, &ids[index]) != Route::Local
        {
            sent.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        async move {
            entry
                .executor
                .execute::<Ledger>(&ids[index], LedgerCommand::Deposit { amount: 1 })
                .await?;
            Ok(())
        }
    })
}

/// One system of the 3-vs-1 part.
pub(super) struct WorkloadRow {
    pub(super) system: &'static str,
    pub(super) entries: usize,
    pub(super) measured: Measurement,
    /// Share of commands sent to a node that does not own their aggregate (None: no cluster).
    pub(super) forwarded_share: Option<f64>,
    /// Commands sent to a non-owner, warm-up included (to compare with the transport's calls).
    pub(super) forwarded: u64,
}

/// What the 3-vs-1 part measured.
pub(super) struct Scaling {
    pub(super) aggregates: usize,
    pub(super) rows: Vec<WorkloadRow>,
    pub(super) settle_one: Duration,
    pub(super) settle_three: Duration,
    pub(super) shards_three: Vec<usize>,
    /// Calls the 3-node cluster's transports made, and the 1-node cluster's (must be 0).
    pub(super) trio_calls: u64,
    pub(super) single_calls: u64,
    pub(super) moved: bool,
    pub(super) self_fences: u64,
}

pub(super) const ONE_NODE: &str = "1-node cluster";
pub(super) const THREE_NODES: &str = "3-node cluster";
pub(super) const PLAIN: &str = "plain executor, no cluster (diagnostic)";

/// Part 2: the same workload on a 1-node cluster, a 3-node cluster and a plain executor, each
/// in its own database, alternating.
pub(super) async fn scaling(ctx: &Ctx, urls: [&str; 3]) -> Result<Scaling, BoxError> {
    let [one_url, three_url, plain_url] = urls;
    let (single, settle_one) = start_cluster(one_url, 1, WORKLOAD_CONNECTIONS).await?;
    let (trio, settle_three) = match start_cluster(three_url, 3, WORKLOAD_CONNECTIONS).await {
        Ok(started) => started,
        Err(error) => {
            stop_all(single).await;
            return Err(error);
        }
    };
    let plain_config = PgConfig::new(plain_url).max_connections(WORKLOAD_CONNECTIONS);
    let plain = match plain_executor(&plain_config).await {
        Ok(plain) => plain,
        Err(error) => {
            stop_all(single).await;
            stop_all(trio).await;
            return Err(error);
        }
    };
    let outcome = scaling_runs(ctx, &single, &trio, &plain.0).await;
    plain.0.shutdown().await;
    plain.1.close().await;
    stop_all(trio).await;
    stop_all(single).await;
    let mut scaling = outcome?;
    scaling.settle_one = settle_one;
    scaling.settle_three = settle_three;
    Ok(scaling)
}

/// An executor without a cluster: plain `PgEventStore` appends, every id local.
pub(super) async fn plain_executor(
    config: &PgConfig,
) -> Result<(Executor, PgEventStore), BoxError> {
    let events = PgEventStore::connect(config).await?;
    let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), config.limits);
    let executor = Executor::builder(Arc::new(events.clone()), Arc::new(snapshots))
        .register::<Ledger>(command_path_settings())
        .build()?;
    Ok((executor, events))
}

pub(super) fn entries(nodes: &[Node]) -> Vec<Entry> {
    nodes
        .iter()
        .map(|n| Entry {
            executor: n.executor.clone(),
            node: Some(n.cluster.clone()),
        })
        .collect()
}

pub(super) async fn scaling_runs(
    ctx: &Ctx,
    single: &[Node],
    trio: &[Node],
    plain: &Executor,
) -> Result<Scaling, BoxError> {
    let aggregates = workload_aggregates(ctx);
    let ids = ids("k", aggregates);
    for executor in [&single[0].executor, &trio[0].executor, plain] {
        activate_all(executor, &ids).await?;
    }
    let sent: [Arc<Sent>; 3] = Default::default();
    let ops = [
        workload_op(entries(single), &ids, &sent[0]),
        workload_op(entries(trio), &ids, &sent[1]),
        workload_op(
            vec![Entry {
                executor: plain.clone(),
                node: None,
            }],
            &ids,
            &sent[2],
        ),
    ];
    let all: Vec<&Node> = single.iter().chain(trio).collect();
    let moves_before = moves(all.iter().copied());
    let calls_of =
        |nodes: &[Node]| -> u64 { nodes.iter().map(|n| calls(n.transport.stats())).sum() };
    let (single_before, trio_before) = (calls_of(single), calls_of(trio));
    let measured = run_alternating(
        WORKLOAD_CALLERS,
        rounds(ctx),
        ctx.warmup(),
        ctx.pg_duration(),
        &ops,
    )
    .await?;
    let moves_after = moves(all.iter().copied());
    let systems = [(ONE_NODE, 1), (THREE_NODES, 3), (PLAIN, 1)];
    let rows = systems
        .into_iter()
        .zip(measured)
        .zip(&sent)
        .map(|(((system, entries), measured), sent)| WorkloadRow {
            system,
            entries,
            measured,
            forwarded_share: (system != PLAIN).then(|| sent.share()),
            forwarded: sent.forwarded.load(Ordering::Relaxed),
        })
        .collect::<Vec<_>>();
    println!(
        "  cluster: {} aggregates, {WORKLOAD_CALLERS} callers: {}",
        aggregates,
        rows.iter()
            .map(|r| format!("{} {}", r.system, fmt_rate(r.measured.per_second())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Scaling {
        aggregates,
        rows,
        settle_one: Duration::ZERO,
        settle_three: Duration::ZERO,
        shards_three: trio
            .iter()
            .map(|n| n.cluster.stats().shards_owned)
            .collect(),
        trio_calls: calls_of(trio) - trio_before,
        single_calls: calls_of(single) - single_before,
        moved: moves_after != moves_before,
        self_fences: all.iter().map(|n| n.cluster.stats().self_fences).sum(),
    })
}
