//! Cluster membership and shard ownership against PostgreSQL: nodes split the shards by
//! rendezvous hashing and never both own one; a dead node's shards move after the TTL; a node
//! leaving hands its shards over; a node that cannot heartbeat stops serving before the TTL; a
//! joining node takes about its share; appends are fenced by ownership.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cluster::{
    ClusterConfig, ClusterError, ClusterNode, FencedEventStore, ShardHandoff, preferred_owner,
};
use event_stores::testing::fresh_database;
use event_stores::{EventStore, NewEvent, StoreError, StoreLimits, StreamId};
use tokio::sync::Mutex;
use uuid::Uuid;

const SHARDS: u32 = 64;

fn config(name: &str) -> ClusterConfig {
    ClusterConfig {
        shard_count: SHARDS,
        heartbeat_interval: Duration::from_millis(200),
        ttl: Duration::from_millis(1_000),
        self_fence_margin: Duration::from_millis(300),
        ..ClusterConfig::new(format!("{name}.test:7000"))
    }
}

/// [`config`] with another TTL and self-fence margin (every node of a cluster has the same
/// TTL), for tests whose steps must fit between the self-fence limit (`ttl - margin`) and the
/// TTL, or within the limit, even when the test process stalls for several hundred
/// milliseconds on a loaded machine.
fn config_with(name: &str, ttl: Duration, self_fence_margin: Duration) -> ClusterConfig {
    ClusterConfig {
        ttl,
        self_fence_margin,
        ..config(name)
    }
}

#[derive(Default)]
struct Recorder {
    released: Mutex<Vec<u32>>,
    fenced: Mutex<u32>,
}

#[async_trait]
impl ShardHandoff for Recorder {
    async fn release(&self, shard: u32) {
        self.released.lock().await.push(shard);
    }
    async fn fenced(&self) {
        *self.fenced.lock().await += 1;
    }
}

async fn shard_rows(pool: &sqlx::PgPool) -> Vec<(i32, Option<Uuid>, i64)> {
    sqlx::query_as("SELECT shard, owner, epoch FROM shard_owners ORDER BY shard")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn settle(nodes: &[&ClusterNode]) {
    for _ in 0..3 {
        for node in nodes {
            node.tick_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_node_claims_every_shard() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let node = ClusterNode::start(events.pool().clone(), config("a"))
        .await
        .unwrap();
    assert_eq!(node.owned().len(), SHARDS as usize);
    let rows = shard_rows(events.pool()).await;
    assert_eq!(rows.len(), SHARDS as usize);
    assert!(
        rows.iter()
            .all(|(_, owner, epoch)| *owner == Some(node.node_id()) && *epoch == 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_split_the_shards_by_rendezvous_and_never_both_own_one() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
    // Before b joins: a's next tick may already release b's shards.
    let handoff = Arc::new(Recorder::default());
    a.set_handoff(handoff.clone()).await;
    let b = ClusterNode::start(pool.clone(), config("b")).await.unwrap();
    settle(&[&a, &b]).await;

    let members = [a.node_id(), b.node_id()];
    let mine_a: HashSet<u32> = a.owned().owned().into_iter().collect();
    let mine_b: HashSet<u32> = b.owned().owned().into_iter().collect();
    assert!(
        mine_a.is_disjoint(&mine_b),
        "no shard is served by both nodes"
    );
    assert_eq!(mine_a.len() + mine_b.len(), SHARDS as usize);
    for shard in 0..SHARDS {
        let expected = preferred_owner(shard, &members).unwrap();
        let serving = if mine_a.contains(&shard) {
            a.node_id()
        } else {
            b.node_id()
        };
        assert_eq!(serving, expected, "shard {shard}");
    }
    // What moved from a to b went through a's handoff first, and its epoch grew twice
    // (release, then claim).
    let released = handoff.released.lock().await.clone();
    assert_eq!(released.len(), mine_b.len());
    for (shard, owner, epoch) in shard_rows(&pool).await {
        let shard = u32::try_from(shard).unwrap();
        if mine_b.contains(&shard) {
            assert_eq!((owner, epoch), (Some(b.node_id()), 3));
        } else {
            assert_eq!((owner, epoch), (Some(a.node_id()), 1));
        }
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.members, 2);
    assert_eq!(sa.releases as usize, mine_b.len());
    assert_eq!(sb.claims as usize, mine_b.len());
}

/// Stops the actors of lost shards slowly, as a handoff with many actors and snapshots does.
#[derive(Default)]
struct SlowToStop {
    lost: Mutex<Vec<Vec<u32>>>,
    stopped: Mutex<usize>,
}

#[async_trait]
impl ShardHandoff for SlowToStop {
    async fn release(&self, _shard: u32) {}
    async fn lost(&self, shards: &[u32]) {
        self.lost.lock().await.push(shards.to_vec());
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        *self.stopped.lock().await += 1;
    }
    async fn fenced(&self) {}
}

/// Shards taken over behind a node's back (it missed the takeover) are handed to its handoff
/// all at once, and however long their actors take to stop (here 2.5 s, over twice the TTL)
/// the node goes on heartbeating and serving its other shards, and does not take the lost
/// shards back before their actors have stopped.
#[tokio::test(flavor = "multi_thread")]
async fn stopping_the_actors_of_lost_shards_does_not_hold_up_the_heartbeat() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
    let b = ClusterNode::start(pool.clone(), config("b")).await.unwrap();
    settle(&[&a, &b]).await;
    let handoff = Arc::new(SlowToStop::default());
    a.set_handoff(handoff.clone()).await;
    let a_shards = a.owned().owned();
    assert!(a_shards.len() >= 4, "{a_shards:?}");
    let (lost, kept) = a_shards.split_at(3);
    // The takeover a misses: three of a's shards owned by another node and given up again
    // meanwhile (no owner, a new epoch). They are still a's to claim, but only once the actors
    // it had for them have stopped.
    let taken: Vec<i32> = lost.iter().map(|&s| i32::try_from(s).unwrap()).collect();
    sqlx::query("UPDATE shard_owners SET owner = NULL, epoch = epoch + 2 WHERE shard = ANY($1)")
        .bind(&taken)
        .execute(&pool)
        .await
        .unwrap();
    let changed = Instant::now();
    while handoff.lost.lock().await.is_empty() {
        assert!(changed.elapsed() < Duration::from_secs(3), "never told");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *handoff.lost.lock().await,
        vec![lost.to_vec()],
        "all at once, in one call"
    );
    assert!(lost.iter().all(|&s| !a.owned().serves(s)));
    // While they stop: a heartbeats in time and serves the rest.
    while *handoff.stopped.lock().await == 0 {
        let stats = a.stats();
        assert_eq!(stats.self_fences, 0, "the heartbeat fell behind: {stats:?}");
        assert!(kept.iter().all(|&s| a.owned().serves(s)));
        assert!(
            lost.iter().all(|&s| !a.owned().serves(s)),
            "a lost shard granted again before its actors stopped"
        );
        assert!(changed.elapsed() < Duration::from_secs(6), "never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.stats().self_fences, 0);
    let stopped = Instant::now();
    while !lost.iter().all(|&s| a.owned().serves(s)) {
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "the lost shards were not claimed back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node dies in the middle of a fenced transaction (a reminder change, say), so one of its
/// shard rows stays share-locked until the server ends that session. The survivor claims
/// every other shard of the dead node after the TTL as usual, without waiting on that row and
/// without its own heartbeats falling behind, and claims the locked one once it is free.
#[tokio::test(flavor = "multi_thread")]
async fn a_shard_row_held_locked_by_a_dead_nodes_transaction_holds_up_no_other_claim() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
    let b = ClusterNode::start(pool.clone(), config("b")).await.unwrap();
    settle(&[&a, &b]).await;
    let b_shards = b.owned().owned();
    assert!(b_shards.len() >= 2, "{b_shards:?}");
    let locked = b_shards[0];
    // As a fenced append inside a transaction holds it (`FOR SHARE`), then b dies.
    let mut dead_transaction = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM shard_owners WHERE shard = $1 FOR SHARE")
        .bind(i32::try_from(locked).unwrap())
        .fetch_one(&mut *dead_transaction)
        .await
        .unwrap();
    let died = Instant::now();
    drop(b);
    let others = b_shards.len() - 1;
    let taken_over = loop {
        let taken: Vec<u32> = b_shards
            .iter()
            .copied()
            .filter(|&shard| a.owned().serves(shard))
            .collect();
        assert!(!taken.contains(&locked), "claimed through a held lock");
        if taken.len() == others {
            break died.elapsed();
        }
        assert!(
            died.elapsed() < Duration::from_secs(5),
            "a took {} of the dead node's {others} free shards in {:?}: {:?}",
            taken.len(),
            died.elapsed(),
            a.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A few more ticks with the row still locked: a keeps heartbeating in time.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!a.owned().serves(locked));
    assert_eq!(a.stats().self_fences, 0, "{:?}", a.stats());
    dead_transaction.rollback().await.unwrap();
    let freed = Instant::now();
    while !a.owned().serves(locked) {
        assert!(
            freed.elapsed() < Duration::from_secs(3),
            "the freed shard was never claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "locked shard row: {others} other shards taken over {taken_over:?} after the death, the \
         locked one {:?} after it was freed",
        freed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_nodes_shards_are_claimed_once_its_heartbeat_is_older_than_the_ttl() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
    let b = ClusterNode::start(pool.clone(), config("b")).await.unwrap();
    settle(&[&a, &b]).await;
    let b_id = b.node_id();
    let b_shards: Vec<i32> = b
        .owned()
        .owned()
        .into_iter()
        .map(|shard| i32::try_from(shard).unwrap())
        .collect();
    assert!(!b_shards.is_empty());
    // b dies: its loop ends with its last handle, no release, no leave.
    let died = Instant::now();
    drop(b);
    let taken_over = loop {
        if a.owned().len() == SHARDS as usize {
            break died.elapsed();
        }
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "a never took over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Not before the TTL, on the database's clock: from b's last heartbeat to the claim of each
    // of its shards (the rows' `changed_at`). Timed from the drop instead, a stall of the test
    // between b's last heartbeat and the drop would shorten it.
    let (earliest, claimed): (f64, i64) = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM min(o.changed_at - m.heartbeat_at))::float8, count(*) \
         FROM shard_owners o, cluster_members m \
         WHERE m.node_id = $1 AND o.shard = ANY($2) AND o.owner = $3",
    )
    .bind(b_id)
    .bind(&b_shards)
    .bind(a.node_id())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        claimed as usize,
        b_shards.len(),
        "a claimed every shard of b"
    );
    let earliest = Duration::from_secs_f64(earliest.max(0.0));
    assert!(
        earliest >= Duration::from_secs(1),
        "a shard claimed {earliest:?} after b's last heartbeat: before the TTL (1 s) the dead \
         node still counted as alive"
    );
    eprintln!(
        "{} shards of a dead node taken over after {taken_over:?}, the first {earliest:?} after \
         its last heartbeat (ttl 1 s, tick 200 ms)",
        b_shards.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaving_node_hands_its_shards_over_and_the_others_claim_them_at_once() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
    let b = ClusterNode::start(pool.clone(), config("b")).await.unwrap();
    settle(&[&a, &b]).await;
    let handoff = Arc::new(Recorder::default());
    b.set_handoff(handoff.clone()).await;
    let b_shards: HashSet<u32> = b.owned().owned().into_iter().collect();
    b.leave().await.unwrap();
    assert!(b.owned().is_empty());
    let released: HashSet<u32> = handoff.released.lock().await.iter().copied().collect();
    assert_eq!(released, b_shards, "every shard went through the handoff");
    a.tick_now().await;
    assert_eq!(
        a.owned().len(),
        SHARDS as usize,
        "claimed at the next tick, no TTL wait"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_cannot_heartbeat_stops_serving_before_its_ttl_ends() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    // b fences itself 1.2 s to 1.4 s after its last heartbeat (its limit, then its next tick),
    // a may claim b's shards 2.5 s after it: more than a second apart, so that a stalled test
    // process cannot change their order. (The lease ends serving at the limit however late
    // b's tick runs.)
    let (ttl, margin) = (Duration::from_millis(2_500), Duration::from_millis(1_300));
    let a = ClusterNode::start(events.pool().clone(), config_with("a", ttl, margin))
        .await
        .unwrap();
    let b = ClusterNode::start(events.pool().clone(), config_with("b", ttl, margin))
        .await
        .unwrap();
    settle(&[&a, &b]).await;
    let handoff = Arc::new(Recorder::default());
    b.set_handoff(handoff.clone()).await;
    let b_shards = b.owned().owned();
    assert!(!b_shards.is_empty());

    // Closing b's own connections: b can no longer reach the database.
    let cut = Instant::now();
    b.membership_pool().close().await;
    let mut fenced_after = None;
    let claimed_after = loop {
        // a first: whatever a holds now it took before b is looked at below.
        let taken = b_shards
            .iter()
            .filter(|&&shard| a.owned().epoch(shard).is_some())
            .count();
        let b_serving: Vec<u32> = b_shards
            .iter()
            .copied()
            .filter(|&shard| b.owned().serves(shard))
            .collect();
        let b_fenced = b.owned().is_empty();
        if b_fenced && fenced_after.is_none() {
            fenced_after = Some(cut.elapsed());
        }
        if taken > 0 {
            assert!(
                b_serving.is_empty(),
                "a took {taken} of b's shards while b still served {b_serving:?}"
            );
            assert!(
                b_fenced,
                "a took {taken} of b's shards before b fenced itself ({:?} after the cut)",
                cut.elapsed()
            );
        }
        if taken == b_shards.len() && a.owned().len() == SHARDS as usize {
            break cut.elapsed();
        }
        assert!(cut.elapsed() < Duration::from_secs(10), "a never took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let fenced_after = fenced_after.expect("b fenced itself before a took over");
    assert_eq!(*handoff.fenced.lock().await, 1);
    assert_eq!(b.stats().self_fences, 1);
    eprintln!(
        "cut off: stopped serving after {fenced_after:?}, taken over after {claimed_after:?}"
    );
}

/// The owners' table locked for 3 s (three times the TTL): the node cannot read it, so it
/// neither claims nor releases meanwhile, but its heartbeats go on in time, so it keeps
/// serving what it owns and does not fence itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_cannot_read_the_owners_table_for_a_while_goes_on_heartbeating_and_serving() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
    a.tick_now().await;
    assert_eq!(a.owned().len(), SHARDS as usize);
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE shard_owners IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let locked = Instant::now();
    while locked.elapsed() < Duration::from_secs(3) {
        assert!(
            (0..SHARDS).all(|s| a.owned().serves(s)),
            "stopped serving {:?} into the lock: {:?}",
            locked.elapsed(),
            a.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    blocker.rollback().await.unwrap();
    let stats = a.stats();
    assert_eq!(stats.self_fences, 0, "{stats:?}");
    assert_eq!(stats.heartbeat_failures, 0, "{stats:?}");
}

/// The server process of the first heartbeat seen waiting for a lock (within 5 s).
async fn waiting_heartbeat(pool: &sqlx::PgPool) -> i32 {
    let looking = Instant::now();
    loop {
        let waiting: Option<(i32,)> = sqlx::query_as(
            "SELECT pid FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%SET heartbeat_at%'
               AND pid <> pg_backend_pid()",
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some((pid,)) = waiting {
            return pid;
        }
        assert!(
            looking.elapsed() < Duration::from_secs(5),
            "no heartbeat waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A heartbeat that waited on a lock past the node's lease and was then answered: while it
/// waited the node's row looked stale to the others, who may have claimed its shards. The
/// node fences (stops its actors, drops its grants) before it renews the lease, and serves
/// again only what the owners' table still gives it.
#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_answered_after_the_lease_ran_out_fences_the_node_before_it_serves_again() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    // Lease 1.5 s, heartbeats 1 s apart: a heartbeat that starts 1 s after the last waits up
    // to 1 s (one interval) for its answer, past the lease's end 0.5 s after it started.
    let (ttl, margin) = (Duration::from_millis(2_500), Duration::from_millis(1_000));
    let a = ClusterNode::start(
        pool.clone(),
        ClusterConfig {
            heartbeat_interval: Duration::from_secs(1),
            ..config_with("a", ttl, margin)
        },
    )
    .await
    .unwrap();
    a.tick_now().await;
    assert_eq!(a.owned().len(), SHARDS as usize);
    let handoff = Arc::new(Recorder::default());
    a.set_handoff(handoff.clone()).await;

    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM cluster_members WHERE node_id = $1 FOR UPDATE")
        .bind(a.node_id())
        .fetch_one(&mut *blocker)
        .await
        .unwrap();
    waiting_heartbeat(&pool).await;
    // The lease ends at most 0.5 s after the heartbeat began waiting; its answer is given up
    // 1 s after. Answer it in between.
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert!(
        (0..SHARDS).all(|s| !a.owned().serves(s)),
        "the lease ran out while the heartbeat waited"
    );
    blocker.rollback().await.unwrap();
    let answered = Instant::now();
    while a.owned().len() < SHARDS as usize || a.stats().self_fences == 0 {
        assert!(
            answered.elapsed() < Duration::from_secs(5),
            "not fenced and served again after a late answer: {:?}",
            a.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = a.stats();
    assert_eq!(stats.self_fences, 1, "{stats:?}");
    assert_eq!(
        *handoff.fenced.lock().await,
        1,
        "its actors were told to stop"
    );
    eprintln!("late heartbeat answer: {stats:?}");
    a.leave().await.unwrap();
}

/// The server's process behind a node's heartbeat stops answering mid-statement (SIGSTOP: no
/// reset, no error, and no server-side timeout fires), as behind a network that drops packets.
/// The node must not wait on it for ever: it fences itself once its lease has run out, and
/// serves again on another connection while that one is still silent.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_heartbeat_gets_no_answer_fences_itself_and_serves_again_on_another_connection()
 {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let (ttl, margin) = (Duration::from_millis(2_500), Duration::from_millis(1_000));
    let limit = ttl - margin;
    let a = ClusterNode::start(pool.clone(), config_with("a", ttl, margin))
        .await
        .unwrap();
    a.tick_now().await;
    assert_eq!(a.owned().len(), SHARDS as usize);
    let handoff = Arc::new(Recorder::default());
    a.set_handoff(handoff.clone()).await;

    // Catch a's next heartbeat waiting for the table (it runs every 200 ms), stop the process
    // serving it, then let the table go: the heartbeat has been sent and will never be answered.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE cluster_members IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let backend = waiting_heartbeat(&pool).await;
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &backend.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {backend}: {status}");
    };
    signal("-STOP");
    let cut = Instant::now();
    blocker.rollback().await.unwrap();

    let fenced_after = loop {
        if a.stats().self_fences == 1 {
            break cut.elapsed();
        }
        if cut.elapsed() > limit + Duration::from_secs(3) {
            signal("-CONT");
            panic!(
                "no self-fence {:?} after a's heartbeat went unanswered (lease {limit:?}): {:?}",
                cut.elapsed(),
                a.stats()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        *handoff.fenced.lock().await,
        1,
        "its actors were told to stop"
    );
    let served_again_after = loop {
        if a.owned().len() == SHARDS as usize && (0..SHARDS).all(|s| a.owned().serves(s)) {
            break cut.elapsed();
        }
        if cut.elapsed() > limit + Duration::from_secs(8) {
            signal("-CONT");
            panic!("a never served again: {:?}", a.stats());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Still silent: a serves again on another connection.
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).unwrap();
    let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
    signal("-CONT");
    assert_eq!(state, Some("T"), "backend {backend} still stopped: {stat}");
    let stats = a.stats();
    assert!(stats.heartbeat_failures >= 1, "{stats:?}");
    eprintln!(
        "unanswered heartbeat: fenced {fenced_after:?} and served again {served_again_after:?} \
         after it was cut (lease {limit:?}); {stats:?}"
    );
    a.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joining_fourth_node_takes_about_a_quarter_of_the_shards() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let big = |name: &str| ClusterConfig {
        shard_count: 1_024,
        max_releases_per_tick: 1_024,
        ..config(name)
    };
    let a = ClusterNode::start(pool.clone(), big("a")).await.unwrap();
    let b = ClusterNode::start(pool.clone(), big("b")).await.unwrap();
    let c = ClusterNode::start(pool.clone(), big("c")).await.unwrap();
    settle(&[&a, &b, &c]).await;
    let before = shard_rows(&pool).await;
    let d = ClusterNode::start(pool.clone(), big("d")).await.unwrap();
    settle(&[&a, &b, &c, &d]).await;
    let after = shard_rows(&pool).await;
    let moved: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| x.1 != y.1)
        .map(|(_, y)| y.1)
        .collect();
    assert!(
        moved.iter().all(|owner| *owner == Some(d.node_id())),
        "shards only move to the joiner"
    );
    // Each shard goes to the joiner with probability 1/4: the share's standard deviation over
    // 1 024 shards is 1.35 points; 5 points is 3.7 of them.
    let share = moved.len() as f64 / 1_024.0;
    assert!(
        (share - 0.25).abs() <= 0.05,
        "moved {share:.3} of the shards"
    );
    assert_eq!(d.owned().len(), moved.len());
    eprintln!(
        "a fourth node took {} of 1024 shards ({:.1} %)",
        moved.len(),
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_through_the_fenced_store_need_the_shard_and_stop_when_it_moves() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let events: Arc<dyn EventStore> = Arc::new(events);
    let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
    let fenced_a = FencedEventStore::new(Arc::clone(&events), a.node_id(), a.owned().clone());
    let stream = (0..)
        .map(|i| StreamId::new("account", format!("acc-{i}")).unwrap())
        .next()
        .unwrap();
    let event = || vec![NewEvent::new("Opened", 1, b"{}".to_vec())];
    fenced_a.append(&stream, 0, event()).await.unwrap();

    // b joins; find a stream whose shard moved to b.
    let b = ClusterNode::start(pool.clone(), config("b")).await.unwrap();
    settle(&[&a, &b]).await;
    let moved = (0..)
        .map(|i| StreamId::new("account", format!("moved-{i}")).unwrap())
        .find(|s| {
            b.owned()
                .serves(b.shard_of(s.aggregate_type(), s.aggregate_id()))
        })
        .unwrap();
    let refused = fenced_a.append(&moved, 0, event()).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { epoch: 0, .. })),
        "{refused:?}"
    );
    let fenced_b = FencedEventStore::new(Arc::clone(&events), b.node_id(), b.owned().clone());
    fenced_b.append(&moved, 0, event()).await.unwrap();
    assert_eq!(events.stream_version(&moved).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_missed_its_route_makes_the_node_look_again_before_its_next_heartbeat() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    // Heartbeats far apart: without the hint, a would learn of b's leaving only 5 s later.
    let slow = |name: &str| ClusterConfig {
        heartbeat_interval: Duration::from_secs(5),
        ttl: Duration::from_secs(15),
        ..config(name)
    };
    let a = ClusterNode::start(events.pool().clone(), slow("a"))
        .await
        .unwrap();
    let b = ClusterNode::start(events.pool().clone(), slow("b"))
        .await
        .unwrap();
    settle(&[&a, &b]).await;
    assert!(!b.owned().is_empty());
    let placement = a.placement("account");
    let id = (0..)
        .map(|i| format!("acc-{i}"))
        .find(|id| b.owned().serves(b.shard_of("account", id)))
        .unwrap();
    b.leave().await.unwrap();

    let asked = Instant::now();
    actor_runtime::Placement::missed(&placement, &id);
    while a.owned().len() < SHARDS as usize {
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a missed route did not make the node look again (a owns {} shards)",
            a.owned().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "ownership::missed_route: a took b's shards {:?} after a call missed its route \
         (heartbeat every 5 s)",
        asked.elapsed()
    );
}

/// Takes `delay` over every release, as a handoff draining busy actors and writing their
/// snapshots does.
struct SlowHandoff {
    delay: Duration,
    released: Mutex<Vec<u32>>,
}

#[async_trait]
impl ShardHandoff for SlowHandoff {
    async fn release(&self, shard: u32) {
        tokio::time::sleep(self.delay).await;
        self.released.lock().await.push(shard);
    }
    async fn fenced(&self) {}
}

/// The shards `preferred_owner` gives `node` among `members`.
fn preferred_by(node: Uuid, members: &[Uuid]) -> HashSet<u32> {
    (0..SHARDS)
        .filter(|&shard| preferred_owner(shard, members) == Some(node))
        .collect()
}

/// Waits (up to 10 s) until every shard in `shards` is owned by `node` in the database, and
/// returns their epochs.
async fn until_owned(pool: &sqlx::PgPool, node: Uuid, shards: &HashSet<u32>) -> Vec<i64> {
    let started = Instant::now();
    loop {
        let rows = shard_rows(pool).await;
        let mine: Vec<i64> = rows
            .iter()
            .filter(|(shard, owner, _)| {
                shards.contains(&u32::try_from(*shard).unwrap()) && *owner == Some(node)
            })
            .map(|(_, _, epoch)| *epoch)
            .collect();
        if mine.len() == shards.len() {
            return mine;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {} of {} shards reached their preferred owner: {rows:?}",
            mine.len(),
            shards.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A handoff slower than the heartbeat limit (1.6 s against ttl 2 s − margin 500 ms): the
/// releases run beside the tick, which goes on heartbeating, so the releasing node never
/// fences itself and every shard reaches the joining node, through the handoff. (A limit of
/// 1.5 s, seven heartbeats of 200 ms: a test process stalled for several hundred milliseconds
/// does not miss it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_slower_than_the_heartbeat_limit_never_costs_the_node_its_lease() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let (ttl, margin) = (Duration::from_secs(2), Duration::from_millis(500));
    let a = ClusterNode::start(pool.clone(), config_with("a", ttl, margin))
        .await
        .unwrap();
    let handoff = Arc::new(SlowHandoff {
        delay: ttl - margin + Duration::from_millis(100),
        released: Mutex::default(),
    });
    a.set_handoff(handoff.clone()).await;
    let b = ClusterNode::start(pool.clone(), config_with("b", ttl, margin))
        .await
        .unwrap();
    let for_b = preferred_by(b.node_id(), &[a.node_id(), b.node_id()]);
    assert!(!for_b.is_empty());
    let epochs = until_owned(&pool, b.node_id(), &for_b).await;
    assert!(
        epochs.iter().all(|&e| e == 3),
        "claimed, released by a, claimed by b: {epochs:?}"
    );
    let released: HashSet<u32> = handoff.released.lock().await.iter().copied().collect();
    assert_eq!(released, for_b, "every shard went through a's handoff");
    assert_eq!(a.stats().self_fences, 0, "a kept its lease throughout");
    assert_eq!(b.stats().self_fences, 0);
}

/// A node stalled past its heartbeat limit (but not its TTL) fences itself when it wakes, so it
/// no longer serves any shard; the shards the database still names it owner of that another
/// live node now prefers are released all the same (epoch 1 → 2), and that node claims them
/// (→ 3). Before, such a shard stayed with the fenced node, served by nobody, for as long as
/// the node lived.
#[test]
fn a_node_that_fenced_itself_still_releases_the_shards_it_holds_for_another_node() {
    // The stall must pass the self-fence limit (1 s) and end within the TTL (4 s), with b's
    // start-up (a pool, the schema check, its join and first tick) inside it: room for a slow
    // start on a loaded machine, where the test process may stall as well.
    let (ttl, margin) = (Duration::from_secs(4), Duration::from_secs(3));
    let limit = ttl - margin;
    // `a` runs on this thread's runtime, which the test stalls; `b` on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Some(db) = fresh_database().await else {
            return;
        };
        let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
        let pool = events.pool().clone();
        let a = ClusterNode::start(pool.clone(), config_with("a", ttl, margin))
            .await
            .unwrap();
        a.tick_now().await;
        assert_eq!(a.owned().len(), SHARDS as usize);

        // The stall: `b` joins while `a` cannot run; it sees `a` alive and claims nothing.
        let stalled = Instant::now();
        let url = db.url().to_owned();
        let (joined, b_id) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let b_thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let b = ClusterNode::start(pool, config_with("b", ttl, margin))
                    .await
                    .unwrap();
                joined.send((b.node_id(), b.owned().len())).unwrap();
                let _ = stopped.await;
                b.leave().await.unwrap();
            });
        });
        let (b, b_owned_at_start) = b_id.recv().unwrap();
        assert_eq!(b_owned_at_start, 0, "a was alive when b joined");
        std::thread::sleep((limit + Duration::from_millis(100)).saturating_sub(stalled.elapsed()));
        assert!(
            stalled.elapsed() < ttl - Duration::from_secs(1),
            "well within the TTL: stalled {:?}",
            stalled.elapsed()
        );

        let for_b = preferred_by(b, &[a.node_id(), b]);
        let epochs = until_owned(&pool, b, &for_b).await;
        assert!(
            epochs.iter().all(|&e| e == 3),
            "released by a (not taken over as dead): {epochs:?}"
        );
        assert_eq!(a.stats().self_fences, 1, "the stall made a fence itself");
        stop.send(()).unwrap();
        b_thread.join().unwrap();
    });
}

/// Every node of a cluster must judge the others dead after the same TTL it fences itself by:
/// a node configured with another TTL (or shard count) than the cluster was formed with is
/// refused at start, naming the setting, and joins nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_another_ttl_or_shard_count_than_the_cluster_is_refused() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let a = ClusterNode::start(pool.clone(), config("a")).await.unwrap();
    let longer = ClusterConfig {
        ttl: Duration::from_secs(10),
        ..config("b")
    };
    let fewer = ClusterConfig {
        shard_count: SHARDS / 2,
        ..config("c")
    };
    for (what, config, key) in [("ttl", longer, "ttl_ms"), ("shards", fewer, "shard_count")] {
        match ClusterNode::start(pool.clone(), config).await {
            Err(ClusterError::Settings(message)) => {
                assert!(message.contains(key), "{what}: {message}")
            }
            Err(other) => panic!("{what}: expected a settings error, got {other}"),
            Ok(_) => panic!("{what}: a node with other settings joined"),
        }
    }
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_members")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(members, 1, "only a joined");
    assert_eq!(a.owned().len(), SHARDS as usize);
}
