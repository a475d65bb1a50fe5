//! Scenario 8: the cluster (PostgreSQL only).
//!
//! Two measurements, each against a baseline measured alternately in the same run:
//!
//! - **Forwarding overhead.** Two cluster nodes (each its own [`ClusterNode`], executor built
//!   with [`ClusterNode::executor_builder`], [`HttpTransport`] and [`::cluster::serve`] on a
//!   loopback port) on one database. Once ownership is stable, ids owned by node A are picked;
//!   rounds alternate between sending their deposits to A (the owner: the baseline) and to B
//!   (which forwards them to A over HTTP/2). Same ids, callers and command on both sides.
//! - **3 nodes vs 1 node.** The same workload (K aggregates, ids drawn at random, a fixed number
//!   of callers spread evenly over the entry nodes) on a 1-node cluster and on a 3-node
//!   cluster, each in its own database, alternating rounds. A plain executor without a cluster
//!   (unfenced appends, no placement) runs alongside as a diagnostic.
//!
//! All nodes run in this process, on the same tokio runtime, against the same PostgreSQL
//! server: on a small machine this prices the cluster machinery, not scale-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::cluster::{
    ClusterConfig, ClusterNode, ClusterStats, HttpTransport, Route, TransportServer, TransportStats,
};
use aggregate_actors::{Aggregate, Executor};
use event_stores::{PgConfig, PgEventStore, PgSnapshotStore};
use tokio::net::TcpListener;

use crate::BoxError;
use crate::ledger::{Ledger, LedgerCommand};
use crate::measure::{
    Measurement, Op, fmt_count, fmt_duration, fmt_rate, fmt_ratio, op, ratio, run_alternating,
};
use crate::report::{Headline, Section, Table};
use crate::scenarios::Ctx;
use crate::scenarios::executor::{activate_all, command_path_settings, ids};

/// Ids owned by node A that the forwarding runs send commands to.
const FORWARD_IDS: usize = 16;
/// Caller counts of the forwarding runs (caller `c` sends to id `c`).
const FORWARD_CALLERS: [usize; 2] = [1, FORWARD_IDS];
/// Callers of the 3-vs-1 workload, spread evenly over the entry nodes (divisible by 3).
const WORKLOAD_CALLERS: usize = 24;
/// Database connections per node (forwarding runs).
const FORWARD_CONNECTIONS: u32 = 24;
/// Database connections per node or executor (3-vs-1 runs): more than the callers, so the
/// pool never limits a side.
const WORKLOAD_CONNECTIONS: u32 = 32;
/// Longest a cluster may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Aggregates of the 3-vs-1 workload.
fn workload_aggregates(ctx: &Ctx) -> usize {
    if ctx.quick { 256 } else { 1_024 }
}

/// Rounds of alternation.
fn rounds(ctx: &Ctx) -> usize {
    if ctx.quick { 3 } else { 5 }
}

/// One in-process cluster node: membership, an executor wired to it, and its HTTP/2 server.
struct Node {
    cluster: ClusterNode,
    executor: Executor,
    transport: HttpTransport,
    server: TransportServer,
    events: PgEventStore,
}

impl Node {
    /// Joins the cluster in the database at `url`, serving forwarded calls on a loopback port.
    async fn start(url: &str, connections: u32) -> Result<Self, BoxError> {
        let config = PgConfig::new(url).max_connections(connections);
        let events = PgEventStore::connect(&config).await?;
        let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), config.limits);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let cluster =
            ClusterNode::start(events.pool().clone(), ClusterConfig::new(address)).await?;
        let transport = HttpTransport::new()?;
        let executor = cluster
            .executor_builder(
                Arc::new(events.clone()),
                Arc::new(snapshots),
                Arc::new(transport.clone()),
            )
            .register_remote::<Ledger>(command_path_settings())
            .build()?;
        cluster.attach(&executor).await;
        let server = ::cluster::serve(listener, executor.inbound());
        Ok(Self {
            cluster,
            executor,
            transport,
            server,
            events,
        })
    }

    /// Where `id` is served, seen from this node.
    fn route(&self, id: &str) -> Route {
        self.cluster.route(Ledger::TYPE, id)
    }

    /// Leaves the cluster (which stops its tick loop), then stops the executor, the server and
    /// the pool.
    async fn stop(self) -> Result<(), BoxError> {
        let left = self.cluster.leave().await;
        self.executor.shutdown().await;
        self.server.shutdown().await;
        self.events.close().await;
        left?;
        Ok(())
    }
}

/// Starts `count` nodes on the database at `url`, one after the other, and waits until their
/// ownership is stable. Returns the nodes and how long settling took.
async fn start_cluster(
    url: &str,
    count: usize,
    connections: u32,
) -> Result<(Vec<Node>, Duration), BoxError> {
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(count);
    for _ in 0..count {
        match Node::start(url, connections).await {
            Ok(node) => nodes.push(node),
            Err(error) => {
                stop_all(nodes).await;
                return Err(error);
            }
        }
    }
    if let Err(error) = settle(&nodes).await {
        stop_all(nodes).await;
        return Err(error);
    }
    Ok((nodes, started.elapsed()))
}

/// Stops every node, reporting (not returning) failures: used on the way out.
async fn stop_all(nodes: Vec<Node>) {
    for node in nodes {
        if let Err(error) = node.stop().await {
            eprintln!("cluster: a node failed to leave: {error}");
        }
    }
}

/// Steps every node's tick until ownership is stable: every node sees every member, every shard
/// is owned, every node owns some, and one full round of ticks claimed and released nothing
/// (so every node's route table, read in that round, is current).
async fn settle(nodes: &[Node]) -> Result<(), BoxError> {
    let Some(first) = nodes.first() else {
        return Ok(());
    };
    let shard_count = first.cluster.config().shard_count as usize;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let before: Vec<(u64, u64)> = nodes
            .iter()
            .map(|n| {
                let s = n.cluster.stats();
                (s.claims, s.releases)
            })
            .collect();
        for node in nodes {
            node.cluster.tick_now().await;
        }
        let stats: Vec<ClusterStats> = nodes.iter().map(|n| n.cluster.stats()).collect();
        let owned: usize = stats.iter().map(|s| s.shards_owned).sum();
        let quiet = stats
            .iter()
            .zip(&before)
            .all(|(s, b)| (s.claims, s.releases) == *b);
        let everyone = stats
            .iter()
            .all(|s| s.members == nodes.len() && s.shards_owned > 0);
        if quiet && everyone && owned == shard_count {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "ownership not stable after {SETTLE_TIMEOUT:?}: shards owned {:?} of {shard_count}, \
                 members seen {:?}",
                stats.iter().map(|s| s.shards_owned).collect::<Vec<_>>(),
                stats.iter().map(|s| s.members).collect::<Vec<_>>(),
            )
            .into());
        }
    }
}

/// Claims and releases of each node: unchanged across a run means ownership did not move.
fn moves<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<(u64, u64)> {
    nodes
        .into_iter()
        .map(|n| {
            let s = n.cluster.stats();
            (s.claims, s.releases)
        })
        .collect()
}

/// Forwarded calls a transport made (whatever their outcome).
fn calls(stats: TransportStats) -> u64 {
    stats.ok + stats.unreachable + stats.lost
}

/// The first `n` ids `prefix-i` served by `owner` and located on `owner` by `other`.
fn ids_owned_by(
    owner: &Node,
    other: &Node,
    prefix: &str,
    n: usize,
) -> Result<Arc<Vec<String>>, BoxError> {
    let owner_id = owner.cluster.node_id();
    let mut picked = Vec::with_capacity(n);
    for i in 0..n * 1_000 {
        let id = format!("{prefix}-{i}");
        let there =
            matches!(other.route(&id), Route::Remote { node_id, .. } if node_id == owner_id);
        if owner.route(&id) == Route::Local && there {
            picked.push(id);
            if picked.len() == n {
                return Ok(Arc::new(picked));
            }
        }
    }
    Err(format!("found only {} of {n} ids owned by node A", picked.len()).into())
}

/// Caller `c` sends a one-event deposit to `ids[c]` through `executor`.
fn deposit_op(executor: &Executor, ids: &Arc<Vec<String>>) -> Op {
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

/// A 64-bit mix of (caller, iteration): the workload's "random" id, the same sequence for
/// every system (splitmix64).
fn mix(caller: usize, iteration: u64) -> u64 {
    let mut z = ((caller as u64) << 40 ^ iteration).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How many commands a workload sent, and how many of them went to a node that does not own
/// their aggregate (and so were forwarded).
#[derive(Default)]
struct Sent {
    total: AtomicU64,
    forwarded: AtomicU64,
}

impl Sent {
    fn share(&self) -> f64 {
        ratio(
            self.forwarded.load(Ordering::Relaxed) as f64,
            self.total.load(Ordering::Relaxed) as f64,
        )
    }
}

/// One entry point of a workload: an executor, and the cluster node it belongs to (none for
/// the plain executor).
#[derive(Clone)]
struct Entry {
    executor: Executor,
    node: Option<ClusterNode>,
}

/// Caller `c` enters at `entries[c mod entries]` and sends a deposit to a random one of `ids`.
fn workload_op(entries: Vec<Entry>, ids: &Arc<Vec<String>>, sent: &Arc<Sent>) -> Op {
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

/// The server's durability settings as seen from a pool of the scenario's databases.
async fn durability(events: &PgEventStore) -> Result<String, BoxError> {
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(events.pool())
        .await?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(events.pool())
        .await?;
    Ok(format!(
        "fsync={fsync}, synchronous_commit={synchronous_commit}"
    ))
}

/// The forwarding figures at one caller count.
struct ForwardLevel {
    callers: usize,
    local: Measurement,
    forwarded: Measurement,
}

/// What the forwarding part measured.
struct Forwarding {
    levels: Vec<ForwardLevel>,
    settle: Duration,
    shards: Vec<usize>,
    /// Calls A's transport made during the runs (the baseline must make none).
    a_calls: u64,
    /// Calls B's transport made, and how many were not answered.
    b_calls: u64,
    b_failed: u64,
    /// Whether ownership moved during the runs.
    moved: bool,
    self_fences: u64,
    durability: String,
}

/// Part 1: two nodes, ids owned by A, commands sent to A (local) or B (forwarded).
async fn forwarding(ctx: &Ctx, url: &str) -> Result<Forwarding, BoxError> {
    let (nodes, settle) = start_cluster(url, 2, FORWARD_CONNECTIONS).await?;
    let outcome = forwarding_runs(ctx, &nodes, settle).await;
    stop_all(nodes).await;
    outcome
}

async fn forwarding_runs(
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

/// One system of the 3-vs-1 part.
struct WorkloadRow {
    system: &'static str,
    entries: usize,
    measured: Measurement,
    /// Share of commands sent to a node that does not own their aggregate (None: no cluster).
    forwarded_share: Option<f64>,
    /// Commands sent to a non-owner, warm-up included (to compare with the transport's calls).
    forwarded: u64,
}

/// What the 3-vs-1 part measured.
struct Scaling {
    aggregates: usize,
    rows: Vec<WorkloadRow>,
    settle_one: Duration,
    settle_three: Duration,
    shards_three: Vec<usize>,
    /// Calls the 3-node cluster's transports made, and the 1-node cluster's (must be 0).
    trio_calls: u64,
    single_calls: u64,
    moved: bool,
    self_fences: u64,
}

const ONE_NODE: &str = "1-node cluster";
const THREE_NODES: &str = "3-node cluster";
const PLAIN: &str = "plain executor, no cluster (diagnostic)";

/// Part 2: the same workload on a 1-node cluster, a 3-node cluster and a plain executor, each
/// in its own database, alternating.
async fn scaling(ctx: &Ctx, urls: [&str; 3]) -> Result<Scaling, BoxError> {
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
async fn plain_executor(config: &PgConfig) -> Result<(Executor, PgEventStore), BoxError> {
    let events = PgEventStore::connect(config).await?;
    let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), config.limits);
    let executor = Executor::builder(Arc::new(events.clone()), Arc::new(snapshots))
        .register::<Ledger>(command_path_settings())
        .build()?;
    Ok((executor, events))
}

fn entries(nodes: &[Node]) -> Vec<Entry> {
    nodes
        .iter()
        .map(|n| Entry {
            executor: n.executor.clone(),
            node: Some(n.cluster.clone()),
        })
        .collect()
}

async fn scaling_runs(
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

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Section, BoxError> {
    let title = super::ALL[7].title;
    let Some(pg) = &ctx.pg else {
        return Ok(Section::skipped(
            title,
            "no PostgreSQL (no database URL, no binaries)",
        ));
    };
    let forward_url = pg.create_database("cluster_fwd").await?;
    let one_url = pg.create_database("cluster_one").await?;
    let three_url = pg.create_database("cluster_three").await?;
    let plain_url = pg.create_database("cluster_plain").await?;
    let fwd = forwarding(ctx, &forward_url).await?;
    let scale = scaling(ctx, [&one_url, &three_url, &plain_url]).await?;
    Ok(section(ctx, title, &fwd, &scale))
}

fn section(ctx: &Ctx, title: &str, fwd: &Forwarding, scale: &Scaling) -> Section {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_spread_over_the_aggregates() {
        let mut hits = [0u32; 8];
        for caller in 0..4 {
            for i in 0..800 {
                hits[(mix(caller, i) % 8) as usize] += 1;
            }
        }
        assert!(hits.iter().all(|&h| (300..500).contains(&h)), "{hits:?}");
    }
}
