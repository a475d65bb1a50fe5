//! `cluster-demo`: a cluster of `serve --cluster` nodes under load loses one node to SIGKILL,
//! and the database is audited afterwards.
//!
//! 1. Starts the nodes ([`nodes`]) on loopback against one database and waits until every
//!    shard sits with the node rendezvous hashing prefers.
//! 2. Opens the accounts, then runs clients ([`load`]) that send deposits and transfers
//!    (a withdrawal, then a deposit) to random accounts through every node, round-robin.
//!    Each command carries an `Idempotency-Key` and is retried with the same key on a 503,
//!    a 504, a 409 conflict or no answer at all, until it is acknowledged or refused.
//! 3. Reads `shard_owners`, kills one node with SIGKILL and stops sending it anything; the
//!    clients go on. Right after the kill, every account in the killed node's shards gets a
//!    deposit, retried until acknowledged: the last acknowledgement is the time to recover.
//! 4. Keeps the load going a little longer, stops it, waits for the ownership to settle on
//!    the survivors and reads `shard_owners` again (the shard moves), reads every balance
//!    through the API, and the survivors' `/health` and `/metrics`.
//! 5. Stops the survivors (SIGTERM: they leave gracefully), waits for the killed node's
//!    database sessions to end, and audits the `events` table with raw SQL ([`audit`]):
//!    every acknowledged command stored exactly once, nothing else stored, and each balance
//!    equal to the acknowledged deposits minus withdrawals.

pub mod audit;
pub mod load;
pub mod nodes;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aggregate_actors::Aggregate;
use aggregate_actors::event_stores::PgConfig;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::domain::Account;
use audit::{AuditError, Moves, ShardOwners};
use load::{Change, Driver, Outcome};
use nodes::{Node, NodeCommand, NodeError};
use report::{NodeInfo, Recovery, Report, Served};

/// How long the nodes may take to settle their shards, before and after the kill.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the survivors may take to leave on SIGTERM.
const LEAVE_GRACE: Duration = Duration::from_secs(20);

/// The size and pace of a run.
#[derive(Debug, Clone)]
pub struct ClusterDemoOptions {
    /// The database the nodes share.
    pub database_url: String,
    /// Nodes (at least 2).
    pub nodes: usize,
    /// Accounts.
    pub accounts: usize,
    /// Clients sending commands at once.
    pub concurrency: usize,
    /// Load before the kill.
    pub kill_after: Duration,
    /// Load after the killed node's aggregates all answered again.
    pub load_after_recovery: Duration,
    /// Seed of the load and of the node killed.
    pub seed: u64,
    /// Each node's pool size.
    pub max_connections: u32,
    /// The nodes' `RUST_LOG`.
    pub node_log: String,
    /// The `sample-app` executable to start the nodes from (normally this one).
    pub executable: PathBuf,
}

/// Why the demo could not run to its audit.
#[derive(Debug, thiserror::Error)]
pub enum ClusterDemoError {
    /// The options cannot make a demo.
    #[error("{0}")]
    Options(String),
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A node did not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Reading the database failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// Killing or stopping a node failed.
    #[error("cannot signal node {node}: {source}")]
    Signal {
        /// The node's number.
        node: usize,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The node chosen to be killed owned no shard (the cluster never balanced).
    #[error("node {0} owns no shard: nothing to recover")]
    NothingToKill(usize),
    /// Ctrl-C: the nodes were killed.
    #[error("interrupted")]
    Interrupted,
}

/// Prints one progress line at once.
fn say(line: impl std::fmt::Display) {
    println!("{line}");
}

/// Runs the demo (until Ctrl-C, which kills the nodes) and returns what it measured.
pub async fn run(options: ClusterDemoOptions) -> Result<Report, ClusterDemoError> {
    tokio::select! {
        report = run_to_audit(options) => report,
        _ = tokio::signal::ctrl_c() => Err(ClusterDemoError::Interrupted),
    }
}

async fn run_to_audit(options: ClusterDemoOptions) -> Result<Report, ClusterDemoError> {
    if options.nodes < 2 || options.accounts == 0 || options.concurrency == 0 {
        return Err(ClusterDemoError::Options(
            "a cluster demo needs at least 2 nodes, 1 account and 1 client".into(),
        ));
    }
    let began = Instant::now();
    let run = format!("{:08x}", rand::random::<u32>());
    let mut report = Report {
        database: PgConfig::new(options.database_url.clone()).redacted_url(),
        accounts: options.accounts,
        concurrency: options.concurrency,
        run: run.clone(),
        ..Report::default()
    };
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&options.database_url)
        .await
        .map_err(ClusterDemoError::Connect)?;
    say(format_args!(
        "Cluster demo on PostgreSQL at {} (run {run}, seed {}): {} nodes, {} accounts, {} clients",
        report.database, options.seed, options.nodes, options.accounts, options.concurrency
    ));

    // 1. The nodes, and their shards settled.
    let mut nodes = start_nodes(&options, &pool, &mut report, began).await?;

    // 2. Accounts, then the load.
    let accounts: Vec<String> = (0..options.accounts)
        .map(|i| format!("acc-{run}-{i:05}"))
        .collect();
    let driver = Arc::new(Driver::new(
        nodes.iter().map(|n| n.api.clone()).collect(),
        accounts.clone(),
    )?);
    open_accounts(&driver, options.concurrency).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let clients: Vec<_> = (0..options.concurrency)
        .map(|number| {
            tokio::spawn(load::client(
                Arc::clone(&driver),
                number,
                options.seed,
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(options.kill_after).await;

    // 3. The kill, and every account of the killed node probed until it answers.
    let victim = usize::try_from(options.seed).unwrap_or(0) % nodes.len();
    report.acked_before_kill = driver.acked_count();
    let kill = match kill(&pool, &mut nodes, victim, &driver).await {
        Ok(kill) => kill,
        Err(error) => {
            stop.store(true, Ordering::Relaxed);
            return Err(error);
        }
    };
    report.victim = victim + 1;
    report.victim_shards = kill.shards;
    report.victim_accounts = kill.accounts.len();
    report.killed_after = load_started.elapsed();
    say(format_args!(
        "Killed node {} (pid {}) with SIGKILL after {:.1} s of load: it owned {} shards holding {} of the accounts",
        report.victim,
        nodes[victim].pid,
        report.killed_after.as_secs_f64(),
        kill.shards,
        kill.accounts.len()
    ));
    report.recovery = probe(&driver, &kill, &format!("probe-{run}")).await;
    say(format_args!(
        "  {} of its {} accounts answered again, the last {:.2} s after the kill; load goes on",
        report.recovery.answered,
        report.recovery.probed,
        report.recovery.all.as_secs_f64()
    ));

    // 4. More load, then what the cluster looks like now.
    tokio::time::sleep(options.load_after_recovery).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    report.load_time = load_started.elapsed();
    report.ledger = driver.snapshot();
    let survivors: Vec<Node> = nodes
        .into_iter()
        .filter(|n| n.node_id != kill.node_id)
        .collect();
    let ids: Vec<Uuid> = survivors.iter().map(|n| n.node_id).collect();
    let after = match settle(&pool, &ids).await? {
        Some(after) => after,
        None => ShardOwners::read(&pool).await?,
    };
    report.moves = Moves::between(&kill.before, &after, kill.node_id);
    report.claimed_after = report
        .moves
        .last_claim
        .and_then(|at| (at - kill.at_db).to_std().ok());
    let expected = audit::expected_balances(accounts.len(), &report.ledger.acked);
    report.served = served_balances(&driver, &expected).await;
    for node in &survivors {
        if let Some(cluster) = health(&driver, &node.api).await {
            report.health.push((node.number, cluster));
        }
    }
    if let Some(node) = survivors.first() {
        report.cluster_metrics = cluster_series(&driver, &node.api).await;
    }

    // 5. Stop the survivors, wait for every session to end, audit.
    say("Load stopped; stopping the survivors (SIGTERM) and auditing the events table");
    report.left_gracefully = stop_nodes(survivors).await?;
    let quiet = Instant::now();
    while audit::node_sessions(&pool).await? > 0 && quiet.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.audit = audit::audit(
        &pool,
        &format!("acc-{run}-"),
        &accounts,
        &report.ledger.acked,
    )
    .await?;
    pool.close().await;
    report.elapsed = began.elapsed();
    Ok(report)
}

/// Starts the nodes, prints where they are, and waits for their shards to settle.
async fn start_nodes(
    options: &ClusterDemoOptions,
    pool: &PgPool,
    report: &mut Report,
    began: Instant,
) -> Result<Vec<Node>, ClusterDemoError> {
    let command = NodeCommand {
        executable: options.executable.clone(),
        database_url: options.database_url.clone(),
        max_connections: options.max_connections,
        log: options.node_log.clone(),
        // A start hands everything over at once: no load is moving yet.
        max_releases_per_tick: 4_096,
    };
    let nodes = futures::future::try_join_all(
        (1..=options.nodes).map(|number| Node::start(number, &command)),
    )
    .await?;
    for node in &nodes {
        say(format_args!(
            "  node {}: pid {}, API {}, cluster {}, node id {}",
            node.number, node.pid, node.api, node.advertised, node.node_id
        ));
    }
    report.nodes = nodes
        .iter()
        .map(|n| NodeInfo {
            number: n.number,
            node_id: n.node_id,
        })
        .collect();
    let ids: Vec<Uuid> = nodes.iter().map(|n| n.node_id).collect();
    let settled = settle(pool, &ids).await?;
    report.balanced_after = settled.as_ref().map(|_| began.elapsed());
    let owners = match settled {
        Some(owners) => owners,
        None => ShardOwners::read(pool).await?,
    };
    report.shard_count = owners.shard_count();
    let counts = owners.counts();
    report.shares = ids
        .iter()
        .map(|id| counts.get(&Some(*id)).copied().unwrap_or(0))
        .collect();
    say(format_args!(
        "  {} shards: {} per node, {}",
        report.shard_count,
        report
            .shares
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        match report.balanced_after {
            Some(after) => format!("settled {:.1} s after the start", after.as_secs_f64()),
            None => format!("NOT settled after {} s", SETTLE_TIMEOUT.as_secs()),
        }
    ));
    Ok(nodes)
}

/// Opens every account (key `open`), `concurrency` at a time, through every node.
async fn open_accounts(driver: &Arc<Driver>, concurrency: usize) {
    let opened = Instant::now();
    futures::stream::iter(0..driver.accounts.len())
        .map(|i| {
            let driver = Arc::clone(driver);
            async move { driver.command(i, "open", Change::Open).await }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    say(format_args!(
        "Opened {} accounts through every node in {:.2} s; load running ({concurrency} clients: deposits and transfers)",
        driver.accounts.len(),
        opened.elapsed().as_secs_f64(),
    ));
}

/// What the kill left to recover.
struct Kill {
    /// `shard_owners` just before.
    before: ShardOwners,
    /// The killed node.
    node_id: Uuid,
    /// How many shards it owned.
    shards: usize,
    /// The accounts in those shards, by index.
    accounts: Vec<usize>,
    /// When (this clock, then the database's).
    at: Instant,
    at_db: DateTime<Utc>,
}

/// Reads `shard_owners`, SIGKILLs node `victim` (by index) and stops sending it requests.
async fn kill(
    pool: &PgPool,
    nodes: &mut [Node],
    victim: usize,
    driver: &Driver,
) -> Result<Kill, ClusterDemoError> {
    let before = ShardOwners::read(pool).await?;
    let node = &mut nodes[victim];
    let shards = before.owned_by(node.node_id);
    if shards.is_empty() {
        return Err(ClusterDemoError::NothingToKill(node.number));
    }
    let accounts = (0..driver.accounts.len())
        .filter(|&i| {
            let shard =
                ::cluster::shard_of(Account::TYPE, &driver.accounts[i], before.shard_count());
            shards.binary_search(&shard).is_ok()
        })
        .collect();
    let at_db = audit::database_now(pool).await?;
    let at = Instant::now();
    node.kill()
        .await
        .map_err(|source| ClusterDemoError::Signal {
            node: node.number,
            source,
        })?;
    driver.targets.mark_dead(victim);
    Ok(Kill {
        node_id: node.node_id,
        shards: shards.len(),
        before,
        accounts,
        at,
        at_db,
    })
}

/// Sends every account of the killed node a deposit at once, each retried (same key) until
/// answered, and times the answers from the kill.
async fn probe(driver: &Driver, kill: &Kill, key: &str) -> Recovery {
    let answered = futures::future::join_all(kill.accounts.iter().map(|&i| async move {
        match driver.command(i, key, Change::Credit(100)).await {
            Outcome::Acked(_) => Some(kill.at.elapsed()),
            Outcome::Rejected | Outcome::Failed => None,
        }
    }))
    .await;
    let mut times: Vec<Duration> = answered.into_iter().flatten().collect();
    times.sort_unstable();
    Recovery {
        probed: kill.accounts.len(),
        answered: times.len(),
        all: times.last().copied().unwrap_or_default(),
        median: times.get(times.len() / 2).copied().unwrap_or_default(),
    }
}

/// SIGTERMs `nodes` so they leave the cluster; (exited cleanly, stopped).
async fn stop_nodes(nodes: Vec<Node>) -> Result<(usize, usize), ClusterDemoError> {
    let mut clean = 0;
    let count = nodes.len();
    for node in nodes {
        let number = node.number;
        let status =
            node.terminate(LEAVE_GRACE)
                .await
                .map_err(|source| ClusterDemoError::Signal {
                    node: number,
                    source,
                })?;
        clean += usize::from(status.success());
    }
    Ok((clean, count))
}

/// Waits until every shard sits with the owner rendezvous hashing prefers among `live`;
/// `None` when that has not happened within [`SETTLE_TIMEOUT`].
async fn settle(pool: &PgPool, live: &[Uuid]) -> Result<Option<ShardOwners>, AuditError> {
    let started = Instant::now();
    loop {
        let owners = ShardOwners::read(pool).await?;
        if owners.settled(live) {
            return Ok(Some(owners));
        }
        if started.elapsed() >= SETTLE_TIMEOUT {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every account's balance through the surviving nodes.
async fn served_balances(driver: &Driver, expected: &[i128]) -> Served {
    let matching = futures::stream::iter(0..driver.accounts.len())
        .map(|i| async move {
            let api = driver.targets.pick()?;
            let url = format!("{api}/accounts/{}", driver.accounts[i]);
            let state: serde_json::Value = driver.get(&url).await?;
            let balance = state["state"]["balance_cents"].as_u64()?;
            (i128::from(balance) == expected[i]).then_some(())
        })
        .buffer_unordered(16)
        .filter(|matched| std::future::ready(matched.is_some()))
        .count()
        .await;
    Served {
        checked: driver.accounts.len(),
        matching,
    }
}

/// A node's `/health` `cluster` object.
async fn health(driver: &Driver, api: &str) -> Option<serde_json::Value> {
    let body: serde_json::Value = driver.get(&format!("{api}/health")).await?;
    Some(body["cluster"].clone()).filter(|c| !c.is_null())
}

/// The number of `cluster_*` series a node's `/metrics` shows.
async fn cluster_series(driver: &Driver, api: &str) -> usize {
    match driver.get_text(&format!("{api}/metrics")).await {
        Some(text) => text
            .lines()
            .filter(|line| line.starts_with("cluster_"))
            .count(),
        None => 0,
    }
}
