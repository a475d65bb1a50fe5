//! In-process cluster nodes: starting, settling, stopping, and what they report.

use super::*;

/// One in-process cluster node: membership, an executor wired to it, and its HTTP/2 server.
pub(super) struct Node {
    pub(super) cluster: ClusterNode,
    pub(super) executor: Executor,
    pub(super) transport: HttpTransport,
    pub(super) server: TransportServer,
    pub(super) events: PgEventStore,
}

impl Node {
    /// Joins the cluster in the database at `url`, serving forwarded calls on a loopback port.
    pub(super) async fn start(url: &str, connections: u32) -> Result<Self, BoxError> {
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
    pub(super) fn route(&self, id: &str) -> Route {
        self.cluster.route(Ledger::TYPE, id)
    }

    /// Leaves the cluster (which stops its tick loop), then stops the executor, the server and
    /// the pool.
    pub(super) async fn stop(self) -> Result<(), BoxError> {
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
pub(super) async fn start_cluster(
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
pub(super) async fn stop_all(nodes: Vec<Node>) {
    for node in nodes {
        if let Err(error) = node.stop().await {
            eprintln!("cluster: a node failed to leave: {error}");
        }
    }
}

/// Steps every node's tick until ownership is stable: every node sees every member, every shard
/// is owned, every node owns some, and one full round of ticks claimed and released nothing
/// (so every node's route table, read in that round, is current).
pub(super) async fn settle(nodes: &[Node]) -> Result<(), BoxError> {
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
pub(super) fn moves<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<(u64, u64)> {
    nodes
        .into_iter()
        .map(|n| {
            let s = n.cluster.stats();
            (s.claims, s.releases)
        })
        .collect()
}

/// Forwarded calls a transport made (whatever their outcome).
pub(super) fn calls(stats: TransportStats) -> u64 {
    stats.ok + stats.unreachable + stats.lost
}

/// The first `n` ids `prefix-i` served by `owner` and located on `owner` by `other`.
pub(super) fn ids_owned_by(
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

/// The server's durability settings as seen from a pool of the scenario's databases.
pub(super) async fn durability(events: &PgEventStore) -> Result<String, BoxError> {
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
