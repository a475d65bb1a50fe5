//! A wallet cluster of real node processes (`cluster_node`) whose shape changes: the links
//! between nodes are cut while PostgreSQL stays reachable (forwards fail with a retryable
//! error, no shard moves, traffic resumes when the links heal), and a fourth node joins (about a
//! quarter of the shards move to it, and only to it, and each moved wallet's first activation
//! there starts from the snapshot its old owner wrote on release); and a node frozen with
//! appends in flight past its TTL has them refused as fenced once its shards were taken over,
//! and their commands applied once by the new owners.
//! Every run ends with the raw-SQL audit: each acknowledged command stored exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::testing::fresh_database;
use integration_tests::node::{Exec, NodeArgs, NodeProcess};
use integration_tests::proxy::{CutPolicy, FaultProxy, server_addr};
use integration_tests::wallet_cluster::{
    ANSWER, Ledger, SERIAL, SHARD_COUNT, audit, connect, futures_join_all, owners, shard,
    start_nodes, wait_settled, wallet,
};
use sqlx::PgPool;
use uuid::Uuid;

const NODE: &str = env!("CARGO_BIN_EXE_cluster_node");

/// Every shard's (owner, epoch), read with raw SQL.
async fn ownership(pool: &PgPool) -> BTreeMap<i32, (Option<Uuid>, i64)> {
    let rows: Vec<(i32, Option<Uuid>, i64)> =
        sqlx::query_as("SELECT shard, owner, epoch FROM shard_owners")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().map(|(s, o, e)| (s, (o, e))).collect()
}

/// A port free on 127.0.0.1 right now. It is given up again at once: until a node binds it,
/// another socket may take it (see [`start_behind_proxies`]).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a socket holds `port` on 127.0.0.1 now (binding it fails: address in use).
fn port_taken(port: u16) -> bool {
    matches!(
        std::net::TcpListener::bind(("127.0.0.1", port)),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse
    )
}

/// A partition-test node listening on a port of [`free_port`], reached by the others only
/// through a proxy of its own (its advertised address); and that port.
fn spawn_behind_proxy(database_url: &str, n: usize) -> (Arc<NodeProcess>, FaultProxy, u16) {
    let port = free_port();
    let proxy = FaultProxy::start(format!("127.0.0.1:{port}").parse().unwrap());
    let mut args = NodeArgs::new(database_url, format!("partition-node-{n}"));
    args.listen = format!("127.0.0.1:{port}");
    args.advertise = Some(proxy.addr().to_string());
    args.call_timeout = Duration::from_secs(2);
    args.max_releases_per_tick = SHARD_COUNT as usize;
    (
        Arc::new(NodeProcess::spawn(NODE, &args).unwrap()),
        proxy,
        port,
    )
}

/// Waits (up to 30 s) for `node`'s READY; the reason when it ended first or took too long.
async fn ready(node: &Arc<NodeProcess>) -> Result<(), String> {
    let node = Arc::clone(node);
    let waited = tokio::spawn(async move {
        node.wait_ready(Duration::from_secs(30)).await;
    })
    .await;
    waited.map_err(|error| match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "waiting for READY panicked".into()),
        Err(error) => error.to_string(),
    })
}

/// `count` partition-test nodes behind their proxies, ready. The proxy needs a node's port
/// before the node binds it, which it does only after connecting to PostgreSQL: another
/// socket (a connection's local port, another listener) may take the port meanwhile, and the
/// node then ends before READY, unable to listen. Such a node is started again on another port.
async fn start_behind_proxies(
    database_url: &str,
    count: usize,
) -> (Vec<Arc<NodeProcess>>, Vec<FaultProxy>) {
    let mut started: Vec<_> = (0..count)
        .map(|n| spawn_behind_proxy(database_url, n))
        .collect();
    for (n, slot) in started.iter_mut().enumerate() {
        for attempt in 1.. {
            let why = match ready(&slot.0).await {
                Ok(()) => break,
                Err(why) => why,
            };
            let port = slot.2;
            assert!(
                attempt < 5 && why.contains("ended before READY") && port_taken(port),
                "partition-node-{n} (attempt {attempt}, port {port}): {why}"
            );
            eprintln!(
                "partition-node-{n}: port {port} was taken before the node could listen on it; \
                 starting it on another"
            );
            *slot = spawn_behind_proxy(database_url, n);
        }
    }
    started
        .into_iter()
        .map(|(node, proxy, _)| (node, proxy))
        .unzip()
}

/// Sends deposit `command` to `node` until acknowledged or `deadline`; the last answer.
async fn deposit_until_acked(
    node: &NodeProcess,
    id: &str,
    command: Uuid,
    amount: i64,
    deadline: Instant,
) -> Exec {
    loop {
        let answer = node.exec(id, command, amount, ANSWER).await;
        if matches!(answer, Exec::Ack { .. }) || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records an acknowledged deposit for the audit.
fn record(ledger: &Ledger, command: Uuid, id: &str, amount: i64, answer: &Exec) {
    ledger
        .commands
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Exec::Ack { version, .. } = answer {
        ledger
            .acked
            .lock()
            .unwrap()
            .insert(command, (id.to_owned(), amount, *version));
    }
}

/// The node (index into `nodes`) owning wallet `id`, from an ownership read.
fn owner_of(nodes: &[Arc<NodeProcess>], map: &HashMap<u32, Option<Uuid>>, id: &str) -> usize {
    let owner = map.get(&shard(id)).copied().flatten();
    nodes
        .iter()
        .position(|n| n.node_id() == owner)
        .unwrap_or_else(|| panic!("{id}: shard {} owned by {owner:?}", shard(id)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_between_nodes_fails_forwards_retryably_moves_no_shard_and_traffic_resumes_on_healing()
 {
    let _serial = SERIAL.lock().await;
    let Some(database) = fresh_database().await else {
        return;
    };
    let pool = connect(database.url()).await;
    let started = Instant::now();
    // Each node is reached by the others only through its own proxy (its advertised address).
    let (nodes, proxies) = start_behind_proxies(database.url(), 3).await;
    wait_settled(&pool, &nodes, Duration::from_secs(15)).await;
    let map = owners(&pool).await;
    let ledger = Ledger::default();
    let ids: Vec<String> = (0..90).map(wallet).collect();
    let via_other = |id: &str| (owner_of(&nodes, &map, id) + 1) % nodes.len();

    // Healthy: every deposit sent to a non-owner is forwarded and acknowledged.
    for id in &ids {
        let command = Uuid::new_v4();
        let answer = nodes[via_other(id)].exec(id, command, 1, ANSWER).await;
        assert!(
            matches!(answer, Exec::Ack { .. }),
            "{id} through a non-owner before the cut: {answer:?}"
        );
        record(&ledger, command, id, 1, &answer);
    }
    let before = ownership(&pool).await;
    let mut counters_before = Vec::new();
    for node in &nodes {
        counters_before.push(node.stats(ANSWER).await.unwrap());
    }

    // Cut: every node-to-node connection is reset, and so is every new one at its first bytes.
    for proxy in &proxies {
        proxy.set_policy(CutPolicy {
            server_to_client: 1.0,
            client_to_server: 1.0,
            skip_first_chunks: 0,
        });
        proxy.cut_all();
    }
    let cut = Instant::now();
    let partitioned: Vec<(String, Uuid)> =
        ids.iter().map(|id| (id.clone(), Uuid::new_v4())).collect();
    let answers = futures_join_all(partitioned.clone().into_iter().map(|(id, command)| {
        let node = nodes[via_other(&id)].clone();
        async move {
            let answer = node.exec(&id, command, 2, ANSWER).await;
            (id, command, answer)
        }
    }))
    .await;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (id, command, answer) in &answers {
        match answer {
            Exec::Nack(kind) if kind == "not_stored_retryable" || kind == "indeterminate" => {
                *kinds.entry(kind.clone()).or_default() += 1;
            }
            other => panic!("{id} {command} through a non-owner during the cut: {other:?}"),
        }
    }
    // Owners still serve their own wallets: PostgreSQL is reachable, nothing moved.
    for id in ids.iter().take(30) {
        let command = Uuid::new_v4();
        let answer = nodes[owner_of(&nodes, &map, id)]
            .exec(id, command, 3, ANSWER)
            .await;
        assert!(
            matches!(answer, Exec::Ack { .. }),
            "{id} at its owner during the cut: {answer:?}"
        );
        record(&ledger, command, id, 3, &answer);
    }
    // Longer than the TTL plus two heartbeats: had the cut cost anyone its membership, shards
    // would have moved by now.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(cut.elapsed())).await;
    let during = ownership(&pool).await;
    let mut counters_during = Vec::new();
    for node in &nodes {
        counters_during.push(node.stats(ANSWER).await.unwrap());
    }
    let cut_lasted = cut.elapsed();

    // Heal: the same commands, retried with their ids through the same non-owners, go through.
    for proxy in &proxies {
        proxy.set_policy(CutPolicy::default());
    }
    let healed = Instant::now();
    let retried = futures_join_all(partitioned.into_iter().map(|(id, command)| {
        let node = nodes[via_other(&id)].clone();
        async move {
            let answer = deposit_until_acked(
                &node,
                &id,
                command,
                2,
                Instant::now() + Duration::from_secs(20),
            )
            .await;
            (id, command, answer, healed.elapsed())
        }
    }))
    .await;
    let mut duplicates = 0;
    let mut resumed_after = Duration::ZERO;
    for (id, command, answer, at) in &retried {
        assert!(
            matches!(answer, Exec::Ack { .. }),
            "{id} {command} after healing: {answer:?}"
        );
        if matches!(
            answer,
            Exec::Ack {
                duplicate: true,
                ..
            }
        ) {
            duplicates += 1;
        }
        resumed_after = resumed_after.max(*at);
        record(&ledger, *command, id, 2, answer);
    }

    let report = audit(&pool, &ledger).await;
    let proxy_cuts: u64 = proxies.iter().map(|p| p.stats().cuts.total()).sum();
    let failed_forwards: u64 = counters_during
        .iter()
        .zip(&counters_before)
        .map(|(during, before)| {
            let sum = |m: &BTreeMap<String, u64>| m["forwards_unreachable"] + m["forwards_lost"];
            sum(during) - sum(before)
        })
        .sum();
    eprintln!(
        "cluster_membership::partition: cut for {cut_lasted:.1?}: {} forwards answered {kinds:?} \
         ({failed_forwards} failed forwarding attempts, {proxy_cuts} connections cut); after \
         healing every retry acknowledged within {resumed_after:.2?} ({duplicates} as repeats \
         of a command stored during the cut); {} events in {} streams; total {:.1?}",
        answers.len(),
        report.events,
        report.streams,
        started.elapsed()
    );
    assert_eq!(
        before, during,
        "shard ownership (owner, epoch) changed while only node-to-node links were cut"
    );
    for (n, (b, d)) in counters_before.iter().zip(&counters_during).enumerate() {
        for key in ["claims", "releases", "self_fences", "heartbeat_failures"] {
            assert_eq!(b[key], d[key], "node {n}: {key} changed during the cut");
        }
    }
    assert!(
        failed_forwards >= answers.len() as u64,
        "the cut did not fail the forwards ({failed_forwards} failed attempts)"
    );
    for node in &nodes {
        assert!(node.shutdown(Duration::from_secs(15)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_fourth_node_takes_a_quarter_of_the_shards_and_moved_wallets_resume_from_their_release_snapshot()
 {
    let _serial = SERIAL.lock().await;
    let Some(database) = fresh_database().await else {
        return;
    };
    let pool = connect(database.url()).await;
    let started = Instant::now();
    let mut nodes = start_nodes(NODE, database.url(), "join", 3, |_| {}).await;
    wait_settled(&pool, &nodes, Duration::from_secs(15)).await;

    // Two deposits on each of 400 wallets, sent to random owners and non-owners.
    let ledger = Arc::new(Ledger::default());
    let wallets = 400;
    let sent = futures_join_all((0..16).map(|worker| {
        let nodes = nodes.clone();
        let ledger = ledger.clone();
        async move {
            for n in (worker..wallets).step_by(16) {
                let id = wallet(n);
                for round in 0..2 {
                    let command = Uuid::new_v4();
                    let node = &nodes[(n + round) % nodes.len()];
                    let deadline = Instant::now() + Duration::from_secs(20);
                    let answer = deposit_until_acked(node, &id, command, 5, deadline).await;
                    assert!(matches!(answer, Exec::Ack { .. }), "{id}: {answer:?}");
                    record(&ledger, command, &id, 5, &answer);
                }
            }
        }
    }));
    sent.await;
    assert_eq!(ledger.acked().len(), 2 * wallets);
    let before = ownership(&pool).await;
    // On the database clock, which stamps the snapshots.
    let join_started: f64 = sqlx::query_scalar("SELECT extract(epoch FROM now())::float8")
        .fetch_one(&pool)
        .await
        .unwrap();

    // The fourth node joins with the default settings (64 releases per tick).
    let joiner = start_nodes(NODE, database.url(), "join-fourth", 1, |_| {})
        .await
        .remove(0);
    let joined = Instant::now();
    nodes.push(joiner.clone());
    wait_settled(&pool, &nodes, Duration::from_secs(30)).await;
    let settled_after = joined.elapsed();
    let after = ownership(&pool).await;
    let joiner_id = joiner.node_id().unwrap();
    let members: Vec<Uuid> = nodes.iter().filter_map(|n| n.node_id()).collect();

    let moved: Vec<i32> = before
        .keys()
        .copied()
        .filter(|s| before[s].0 != after[s].0)
        .collect();
    let share = moved.len() as f64 / f64::from(SHARD_COUNT);
    let preferred_by_joiner = (0..SHARD_COUNT)
        .filter(|s| cluster::preferred_owner(*s, &members) == Some(joiner_id))
        .count();
    for s in &moved {
        assert_eq!(
            after[s].0,
            Some(joiner_id),
            "shard {s} moved to a node that was already there"
        );
        assert!(
            after[s].1 > before[s].1,
            "shard {s} moved without a new epoch"
        );
    }
    assert_eq!(
        moved.len(),
        preferred_by_joiner,
        "exactly the joiner's rendezvous share moves"
    );

    // Every moved wallet: its old owner wrote a snapshot of its last version on release (raw
    // SQL), and the joiner's first activation starts from it and replays nothing.
    let moved_set: HashSet<u32> = moved.iter().map(|s| u32::try_from(*s).unwrap()).collect();
    let moved_wallets: Vec<String> = (0..wallets)
        .map(wallet)
        .filter(|id| moved_set.contains(&shard(id)))
        .collect();
    let snapshots: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT aggregate_id, max(version) FROM snapshots
         WHERE aggregate_type = 'wallet' AND taken_at >= to_timestamp($1) GROUP BY aggregate_id",
    )
    .bind(join_started)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let activations = futures_join_all(moved_wallets.iter().cloned().map(|id| {
        let joiner = joiner.clone();
        async move {
            let activation = joiner.activation(&id, ANSWER).await;
            (id, activation)
        }
    }))
    .await;
    let mut problems = Vec::new();
    for (id, activation) in &activations {
        let released = snapshots.get(id).copied();
        match activation {
            Ok((2, Some(2), 0)) if released == Some(2) => {}
            other => problems.push(format!(
                "{id}: activation {other:?} (version, snapshot, replayed); snapshot written \
                 since the join: {released:?}"
            )),
        }
    }
    // Wallets that stayed put were not handed over: no snapshot since the join.
    let stayed_with_snapshots = (0..wallets)
        .map(wallet)
        .filter(|id| !moved_set.contains(&shard(id)) && snapshots.contains_key(id))
        .count();

    let report = audit(&pool, &ledger).await;
    eprintln!(
        "cluster_membership::join: {} of {SHARD_COUNT} shards moved ({:.1} %), all to the \
         joiner, settled {settled_after:.1?} after it joined; {} wallets moved, each activated \
         on the joiner from its release snapshot ({} problems); {stayed_with_snapshots} wallets \
         that stayed got a snapshot; {} events in {} streams; total {:.1?}",
        moved.len(),
        share * 100.0,
        moved_wallets.len(),
        problems.len(),
        report.events,
        report.streams,
        started.elapsed()
    );
    assert!(
        (0.15..=0.35).contains(&share),
        "{:.1} % of the shards moved to the fourth node, not about a quarter",
        share * 100.0
    );
    assert!(
        moved_wallets.len() >= 50,
        "only {} wallets moved",
        moved_wallets.len()
    );
    assert!(
        problems.is_empty(),
        "{} moved wallets did not resume from their release snapshot:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    assert_eq!(
        stayed_with_snapshots, 0,
        "wallets whose shard stayed were snapshotted as if handed over"
    );
    for node in &nodes {
        assert!(node.shutdown(Duration::from_secs(15)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_flight_on_a_node_frozen_past_its_ttl_are_fenced_and_their_commands_applied_once_by_the_new_owners()
 {
    let _serial = SERIAL.lock().await;
    let Some(database) = fresh_database().await else {
        return;
    };
    let pool = connect(database.url()).await;
    let started = Instant::now();
    let mut nodes = start_nodes(NODE, database.url(), "fenced", 2, |a| {
        a.max_releases_per_tick = SHARD_COUNT as usize;
    })
    .await;
    // The node to freeze reaches PostgreSQL through a proxy, which holds its appends in flight.
    let proxy = FaultProxy::start(server_addr(database.url()));
    let mut args = NodeArgs::new(proxy.url_for(database.url()), "fenced-frozen");
    args.max_releases_per_tick = SHARD_COUNT as usize;
    // Longer than the freeze: its callers wait for the real outcome instead of timing out.
    args.call_timeout = Duration::from_secs(20);
    let frozen = Arc::new(NodeProcess::spawn(NODE, &args).unwrap());
    frozen.wait_ready(Duration::from_secs(30)).await;
    nodes.push(frozen.clone());
    wait_settled(&pool, &nodes, Duration::from_secs(15)).await;
    let map = owners(&pool).await;
    let ledger = Ledger::default();
    // Eight of its wallets, each with a first deposit (their actors are live there).
    let wallets: Vec<String> = (0..400)
        .map(wallet)
        .filter(|id| owner_of(&nodes, &map, id) == 2)
        .take(8)
        .collect();
    assert_eq!(wallets.len(), 8);
    for id in &wallets {
        let command = Uuid::new_v4();
        let answer = frozen.exec(id, command, 1, ANSWER).await;
        assert!(matches!(answer, Exec::Ack { .. }), "{id}: {answer:?}");
        record(&ledger, command, id, 1, &answer);
    }

    // Its database traffic stalls; a deposit on each wallet reaches its append and waits there.
    proxy.stall();
    let in_flight: Vec<(String, Uuid)> = wallets
        .iter()
        .map(|id| (id.clone(), Uuid::new_v4()))
        .collect();
    let answers = tokio::spawn(futures_join_all(in_flight.clone().into_iter().map({
        let frozen = frozen.clone();
        move |(id, command)| {
            let frozen = frozen.clone();
            async move {
                let answer = frozen.exec(&id, command, 7, Duration::from_secs(40)).await;
                (id, command, answer)
            }
        }
    })));
    // Time for every deposit to reach its append on a loaded machine, and well inside the
    // lease (TTL 3 s, heartbeat 1 s): stalled heartbeats must not self-fence it first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    frozen.stop();
    let stopped = Instant::now();
    // The others see its heartbeat age past the TTL and take its shards (epoch + 1).
    wait_settled(&pool, &nodes[..2], Duration::from_secs(15)).await;
    let taken_over = stopped.elapsed();
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(stopped.elapsed())).await;
    let stored_meanwhile: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE command_id = ANY($1)")
            .bind(in_flight.iter().map(|(_, c)| *c).collect::<Vec<Uuid>>())
            .fetch_one(&pool)
            .await
            .unwrap();
    // The held appends reach PostgreSQL now, with the old epoch; then the node wakes up.
    proxy.resume();
    frozen.cont();
    let answers = answers.await.unwrap();
    let stats = frozen.stats(ANSWER).await.unwrap();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, answer) in &answers {
        let kind = match answer {
            Exec::Nack(kind) => kind.clone(),
            other => format!("{other:?}"),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE command_id = ANY($1)")
        .bind(in_flight.iter().map(|(_, c)| *c).collect::<Vec<Uuid>>())
        .fetch_one(&pool)
        .await
        .unwrap();

    // Applied once already (by the new owners, after the fence refused them): retried through
    // a live owner, each is answered as the duplicate it is.
    let mut first_time = 0;
    for (id, command) in &in_flight {
        let node = &nodes[owner_of(&nodes[..2], &owners(&pool).await, id)];
        let answer = deposit_until_acked(
            node,
            id,
            *command,
            7,
            Instant::now() + Duration::from_secs(20),
        )
        .await;
        if matches!(
            answer,
            Exec::Ack {
                duplicate: false,
                ..
            }
        ) {
            first_time += 1;
        }
        record(&ledger, *command, id, 7, &answer);
    }
    let report = audit(&pool, &ledger).await;
    eprintln!(
        "cluster_membership::fenced: frozen with {} appends in flight; shards taken over \
         {taken_over:.1?} after SIGSTOP; after SIGCONT they answered {kinds:?}; the node counts \
         {} fenced appends and {} self-fences; {stored} of them stored before the retries, \
         {first_time} retries applied for the first time; {} events in {} streams; total {:.1?}",
        in_flight.len(),
        stats["fenced_appends"],
        stats["self_fences"],
        report.events,
        report.streams,
        started.elapsed()
    );
    assert_eq!(
        stored_meanwhile, 0,
        "an append held in the proxy was stored"
    );
    // The fence refused every held append; each command then went on to its new owner.
    assert!(
        stats["fenced_appends"] >= in_flight.len() as u64,
        "every append in flight was refused by the fence: {stats:?}"
    );
    assert_eq!(
        kinds.get("Ack { version: 2, duplicate: false }").copied(),
        Some(in_flight.len()),
        "every command in flight was applied by the new owner: {kinds:?}"
    );
    let once: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT command_id FROM events WHERE command_id = ANY($1) \
         GROUP BY command_id HAVING count(*) = 1) applied",
    )
    .bind(in_flight.iter().map(|(_, c)| *c).collect::<Vec<Uuid>>())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (stored, once),
        (in_flight.len() as i64, in_flight.len() as i64),
        "each command stored exactly once"
    );
    assert_eq!(
        first_time, 0,
        "a retry of an applied command applied it again"
    );
    for node in &nodes {
        assert!(node.shutdown(Duration::from_secs(15)).await);
    }
}
