//! A wallet cluster of `cluster_node` processes under a deposit load, and the raw-SQL audit of
//! what it stored: what the multi-process cluster tests share.
//!
//! The load sends each deposit, with one command id for all its attempts, to random usable
//! nodes until it is acknowledged; the [`Ledger`] records what every client learnt, and
//! [`audit`] checks the `events` table against it: every acknowledged command stored exactly
//! once at its acknowledged version, nothing stored that was answered "not stored", versions
//! contiguous, balances equal to the acknowledged deposits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aggregate_actors::codec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::node::{Exec, NodeArgs, NodeProcess, State};
use crate::wallet::WalletEvent;

/// Every wallet id of the load starts with this.
pub const PREFIX: &str = "cw-";
/// Shards of the nodes' cluster (the default).
pub const SHARD_COUNT: u32 = cluster::DEFAULT_SHARD_COUNT;
/// How long the test waits for one answer from a node (its own calls are bounded by 5 s).
pub const ANSWER: Duration = Duration::from_secs(8);
/// Attempts per command before it counts as unresolved.
pub const ATTEMPTS: u32 = 40;

/// The tests share two cores: one cluster at a time, so timings measure the cluster.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `n`-th wallet id.
pub fn wallet(n: usize) -> String {
    format!("{PREFIX}{n}")
}

/// The shard of wallet `id`.
pub fn shard(id: &str) -> u32 {
    cluster::shard_of("wallet", id, SHARD_COUNT)
}

/// A small pool on `url` for the audit and the ownership reads.
pub async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .unwrap()
}

/// Starts `count` nodes of `program` (`env!("CARGO_BIN_EXE_cluster_node")`) at once and waits until each is ready.
pub async fn start_nodes(
    program: &str,
    url: &str,
    test: &str,
    count: usize,
    tune: impl Fn(&mut NodeArgs),
) -> Vec<Arc<NodeProcess>> {
    let nodes: Vec<Arc<NodeProcess>> = (0..count)
        .map(|n| {
            let mut args = NodeArgs::new(url, format!("{test}-node-{n}"));
            tune(&mut args);
            Arc::new(NodeProcess::spawn(program, &args).unwrap())
        })
        .collect();
    for node in &nodes {
        node.wait_ready(Duration::from_secs(30)).await;
    }
    nodes
}

/// The owner of every shard, from `shard_owners`.
pub async fn owners(pool: &PgPool) -> HashMap<u32, Option<Uuid>> {
    let rows: Vec<(i32, Option<Uuid>)> = sqlx::query_as("SELECT shard, owner FROM shard_owners")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(s, o)| (u32::try_from(s).unwrap(), o))
        .collect()
}

/// Waits until every shard is owned by its preferred node among `nodes` (the cluster settled).
pub async fn wait_settled(pool: &PgPool, nodes: &[Arc<NodeProcess>], timeout: Duration) {
    let members: Vec<Uuid> = nodes.iter().filter_map(|n| n.node_id()).collect();
    let started = Instant::now();
    loop {
        let map = owners(pool).await;
        let settled = map.len() == SHARD_COUNT as usize
            && map
                .iter()
                .all(|(s, o)| *o == cluster::preferred_owner(*s, &members));
        if settled {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the cluster did not settle within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the clients learnt about every command they sent.
#[derive(Default)]
pub struct Ledger {
    /// Acknowledged: wallet, amount, version answered.
    pub acked: Mutex<HashMap<Uuid, (String, i64, u64)>>,
    /// Every attempt answered that nothing was stored.
    pub never_stored: Mutex<HashSet<Uuid>>,
    /// Gave up without an acknowledgement after an unknown outcome.
    pub unresolved: Mutex<HashSet<Uuid>>,
    /// Deposits sent.
    pub commands: AtomicU64,
    /// Attempts over all deposits.
    pub attempts: AtomicU64,
    /// Attempts after the first.
    pub retries: AtomicU64,
    /// Attempts whose outcome was unknown.
    pub unknown_outcomes: AtomicU64,
    /// Acknowledgements flagged as repeats.
    pub duplicates: AtomicU64,
    /// Attempts sent to a node that did not own the wallet's shard at that moment (as its
    /// own `SHARDS` view is not per shard, this uses the last sampled ownership map).
    pub to_non_owner: AtomicU64,
    /// Attempts answered with a NACK, by kind.
    pub nacks: Mutex<BTreeMap<String, u64>>,
}

impl Ledger {
    /// Every acknowledged deposit: command id → (wallet, amount, version).
    pub fn acked(&self) -> HashMap<Uuid, (String, i64, u64)> {
        self.acked.lock().unwrap().clone()
    }
}

/// Which nodes the load may use, and the owner map used to count forwards.
pub struct Targets {
    /// Every node.
    pub nodes: Vec<Arc<NodeProcess>>,
    /// Whether the load may send to each node.
    pub usable: Vec<AtomicBool>,
    /// The shard owners last read.
    pub owners: Mutex<HashMap<u32, Option<Uuid>>>,
}

impl Targets {
    /// All of `nodes`, usable.
    pub fn new(nodes: &[Arc<NodeProcess>]) -> Arc<Self> {
        Arc::new(Self {
            nodes: nodes.to_vec(),
            usable: nodes.iter().map(|_| AtomicBool::new(true)).collect(),
            owners: Mutex::new(HashMap::new()),
        })
    }

    /// Lets the load use node `node`, or not.
    pub fn set_usable(&self, node: usize, usable: bool) {
        self.usable[node].store(usable, Ordering::SeqCst);
    }

    /// A random usable node.
    pub fn pick(&self, rng: &mut StdRng) -> usize {
        let usable: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.usable[*n].load(Ordering::SeqCst))
            .collect();
        usable[rng.random_range(0..usable.len())]
    }

    /// Whether node `node` owned wallet `id`'s shard at the last ownership read.
    pub fn owns(&self, node: usize, id: &str) -> bool {
        let owner = self
            .owners
            .lock()
            .unwrap()
            .get(&shard(id))
            .copied()
            .flatten();
        owner.is_some() && owner == self.nodes[node].node_id()
    }
}

/// Sends one deposit until it is acknowledged (same command id on every attempt), to a random
/// usable node each time.
pub async fn deposit(
    targets: &Targets,
    ledger: &Ledger,
    rng: &mut StdRng,
    id: String,
    amount: i64,
) {
    let command = Uuid::new_v4();
    ledger.commands.fetch_add(1, Ordering::Relaxed);
    let mut maybe_stored = false;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            ledger.retries.fetch_add(1, Ordering::Relaxed);
            let pause = 20 * u64::from(attempt.min(10));
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let node = targets.pick(rng);
        ledger.attempts.fetch_add(1, Ordering::Relaxed);
        if !targets.owns(node, &id) {
            ledger.to_non_owner.fetch_add(1, Ordering::Relaxed);
        }
        let answer = targets.nodes[node].exec(&id, command, amount, ANSWER).await;
        match answer {
            Exec::Ack { version, duplicate } => {
                if duplicate {
                    ledger.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                ledger
                    .acked
                    .lock()
                    .unwrap()
                    .insert(command, (id, amount, version));
                return;
            }
            Exec::Nack(kind) if kind == "rejected" => {
                panic!("a deposit was rejected: {id} {command}")
            }
            other => {
                if let Exec::Nack(kind) = &other {
                    *ledger
                        .nacks
                        .lock()
                        .unwrap()
                        .entry(kind.clone())
                        .or_default() += 1;
                }
                if other.is_unknown() {
                    maybe_stored = true;
                    ledger.unknown_outcomes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if maybe_stored {
        ledger.unresolved.lock().unwrap().insert(command);
    } else {
        ledger.never_stored.lock().unwrap().insert(command);
    }
}

/// `workers` clients sending `per_worker` deposits each (or until `stop`), to random wallets
/// among `ids`.
pub fn start_load(
    targets: &Arc<Targets>,
    ledger: &Arc<Ledger>,
    seed: u64,
    workers: usize,
    per_worker: usize,
    ids: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    (0..workers)
        .map(|worker| {
            let (targets, ledger, stop) = (targets.clone(), ledger.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (worker as u64).wrapping_mul(0x9E37_79B9));
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = wallet(rng.random_range(0..ids));
                    let amount = rng.random_range(1..=100);
                    deposit(&targets, &ledger, &mut rng, id, amount).await;
                }
            })
        })
        .collect()
}

/// Ids live on two nodes in one sample of every node, taken at once.
#[derive(Default)]
pub struct LiveSamples {
    /// Samples taken.
    pub samples: usize,
    /// The most ids live in one sample (all nodes together).
    pub most_live: usize,
    /// (sample, id, nodes it was live on).
    pub doubles: Vec<(usize, String, Vec<String>)>,
    /// (sample, id, nodes that served it): live there with its shard served.
    pub serving_doubles: Vec<(usize, String, Vec<String>)>,
    /// Longest time one sample took from first request to last answer.
    pub slowest: Duration,
}

/// Samples every node once; returns how many ids were live on two nodes.
pub async fn sample_live(nodes: &[Arc<NodeProcess>], ids: usize, into: &mut LiveSamples) -> usize {
    let started = Instant::now();
    let answers = futures_join_all(nodes.iter().map(|n| {
        let n = n.clone();
        async move { (n.name().to_owned(), n.live(PREFIX, ids, ANSWER).await) }
    }))
    .await;
    into.slowest = into.slowest.max(started.elapsed());
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut serving: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut total = 0;
    for (name, live) in answers {
        let Some(live) = live else {
            continue;
        };
        total += live.len();
        for (id, served) in live {
            if served {
                serving.entry(id.clone()).or_default().push(name.clone());
            }
            seen.entry(id).or_default().push(name.clone());
        }
    }
    let mut doubles = 0;
    for (id, on) in seen {
        if on.len() > 1 {
            doubles += 1;
            into.doubles.push((into.samples, id, on));
        }
    }
    for (id, on) in serving {
        if on.len() > 1 {
            into.serving_doubles.push((into.samples, id, on));
        }
    }
    into.most_live = into.most_live.max(total);
    into.samples += 1;
    doubles
}

/// Runs futures concurrently on this task (no extra dependency).
pub async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<JoinHandle<F::Output>> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// What the raw-SQL audit found.
#[derive(Debug)]
pub struct Audit {
    /// Events stored.
    pub events: usize,
    /// Wallets with events.
    pub streams: usize,
}

/// Every acknowledged command stored exactly once at the version it was acknowledged with, no
/// command stored that was not acknowledged (unless its outcome stayed unknown), versions
/// 1..n per stream, and each balance the sum of the acknowledged deposits.
pub async fn audit(pool: &PgPool, ledger: &Ledger) -> Audit {
    let acked = ledger.acked();
    let never_stored = ledger.never_stored.lock().unwrap().clone();
    let unresolved = ledger.unresolved.lock().unwrap().clone();
    let counts: Vec<(Option<Uuid>, i64)> = sqlx::query_as(
        "SELECT command_id, count(*) FROM events WHERE aggregate_type = 'wallet'
         GROUP BY command_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let counts: HashMap<Option<Uuid>, i64> = counts.into_iter().collect();
    assert!(
        !counts.contains_key(&None),
        "events without a command id were stored"
    );
    let mut problems = Vec::new();
    for (command, (id, _, _)) in &acked {
        match counts.get(&Some(*command)) {
            Some(1) => {}
            Some(n) => problems.push(format!("acknowledged {command} on {id} stored {n} times")),
            None => problems.push(format!("acknowledged {command} on {id} is lost")),
        }
    }
    for command in counts.keys().flatten() {
        if never_stored.contains(command) {
            problems.push(format!("{command} was answered not-stored but is stored"));
        } else if !acked.contains_key(command) && !unresolved.contains(command) {
            problems.push(format!(
                "{command} is stored but was never sent or acknowledged"
            ));
        }
    }

    let rows: Vec<(String, i64, Option<Uuid>, Vec<u8>)> = sqlx::query_as(
        "SELECT aggregate_id, version, command_id, payload FROM events
         WHERE aggregate_type = 'wallet' ORDER BY aggregate_id, version",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut streams: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for (id, version, command, payload) in &rows {
        let (last, balance) = streams.entry(id.clone()).or_default();
        let version = u64::try_from(*version).unwrap();
        if version != *last + 1 {
            problems.push(format!("{id}: version {version} follows {last}"));
        }
        *last = version;
        let event: WalletEvent = codec::decode(payload).unwrap();
        *balance += event.amount();
        if let Some((_, _, acked_version)) = command.and_then(|c| acked.get(&c))
            && *acked_version != version
        {
            problems.push(format!(
                "{id}: {command:?} acknowledged at version {acked_version}, stored at {version}"
            ));
        }
    }
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (id, amount, _) in acked.values() {
        *expected.entry(id.clone()).or_default() += amount;
    }
    if unresolved.is_empty() {
        for (id, (_, balance)) in &streams {
            let want = expected.get(id).copied().unwrap_or(0);
            if *balance != want {
                problems.push(format!(
                    "{id}: stored balance {balance}, acknowledged deposits sum to {want}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "audit failed ({} problems):\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        unresolved.is_empty(),
        "{} commands never resolved after {ATTEMPTS} attempts",
        unresolved.len()
    );
    Audit {
        events: rows.len(),
        streams: streams.len(),
    }
}

/// The wallets whose version and balance, as a node serves them, differ from what is stored.
pub async fn served_state_mismatches(pool: &PgPool, nodes: &[Arc<NodeProcess>]) -> Vec<String> {
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT aggregate_id, version, payload FROM events
         WHERE aggregate_type = 'wallet' ORDER BY aggregate_id, version",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut stored: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for (id, version, payload) in rows {
        let entry = stored.entry(id).or_default();
        entry.0 = u64::try_from(version).unwrap();
        entry.1 += codec::decode::<WalletEvent>(&payload).unwrap().amount();
    }
    let mut wrong = Vec::new();
    for node in nodes {
        let checks = futures_join_all(stored.clone().into_iter().map(|(id, truth)| {
            let node = node.clone();
            async move {
                let served = node.state(&id, ANSWER).await;
                (id, truth, served)
            }
        }))
        .await;
        for (id, (version, balance), served) in checks {
            if served != (State::Found { version, balance }) {
                wrong.push(format!(
                    "{}: {id} served {served:?}, stored version {version} balance {balance}",
                    node.name()
                ));
            }
        }
    }
    wrong
}

/// Every wallet's version and balance, as each node serves them, equal what is stored.
pub async fn assert_served_states_match_the_store(
    pool: &PgPool,
    nodes: &[Arc<NodeProcess>],
    label: &str,
) {
    let wrong = served_state_mismatches(pool, nodes).await;
    assert!(
        wrong.is_empty(),
        "{label}: {} reads disagree with the store:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Forwards answered, summed over `nodes`.
pub async fn forwards(nodes: &[Arc<NodeProcess>]) -> u64 {
    let mut total = 0;
    for node in nodes {
        if let Some(stats) = node.stats(Duration::from_secs(2)).await {
            total += stats.get("forwards_ok").copied().unwrap_or(0);
        }
    }
    total
}
