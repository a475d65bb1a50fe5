//! Durable reminders on PostgreSQL at volume and through a crash:
//!
//! - 10 000 reminders due within two seconds all fire, each exactly once (raw-SQL audit of the
//!   events their commands stored, and of the reminders left); lag p50/p99 printed.
//! - A node is SIGKILLed while reminders are firing; after a restart none is lost and none
//!   fired twice (same audit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{EventStore, StoreLimits};
use aggregate_actors::scheduler::{Scheduler, SchedulerSettings};
use aggregate_actors::{AggregateSettings, Executor};
use chrono::Utc;
use integration_tests::reminders::{audit, lags_ms, quantile, seed};
use integration_tests::wallet::Wallet;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Waits until `check` holds, polling every 50 ms, for at most `limit`.
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_reminders_due_within_seconds_each_fire_exactly_once() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let count = integration_tests::env_or("REMINDERS", 10_000usize);
    let (events, snapshots) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let events: Arc<dyn EventStore> = Arc::new(events);
    let first_due = Utc::now() + chrono::Duration::seconds(3);
    let seeding = Instant::now();
    let dues = seed(
        Arc::clone(&events),
        count,
        first_due,
        chrono::Duration::seconds(2),
    )
    .await
    .unwrap();
    println!("seeded {count} reminders in {:?}", seeding.elapsed());

    let executor = Executor::builder(Arc::clone(&events), Arc::new(snapshots))
        .register::<Wallet>(AggregateSettings::new().reminders())
        .build()
        .unwrap();
    let scheduler = Scheduler::start(
        executor.clone(),
        SchedulerSettings {
            poll_interval: Duration::from_millis(50),
            ..SchedulerSettings::default()
        },
    );
    let expected = i64::try_from(count).unwrap();
    wait_until(Duration::from_secs(120), "every reminder fired", || async {
        audit(&pool).await.unwrap().events >= expected
    })
    .await;
    let stats = scheduler.stats();
    scheduler.stop().await;
    executor.shutdown().await;

    let found = audit(&pool).await.unwrap();
    assert_eq!(found.events, expected, "{found:?}");
    assert_eq!(
        found.wallets_with_one, expected,
        "one event per reminder: {found:?}"
    );
    assert_eq!(found.wallets_with_more, 0, "{found:?}");
    assert_eq!(found.distinct_commands, expected, "{found:?}");
    assert_eq!(
        found.reminders_left, 0,
        "fired one-shot reminders are gone: {found:?}"
    );
    let lags = lags_ms(&pool, &dues).await.unwrap();
    let elapsed = (Utc::now() - first_due).num_milliseconds();
    println!(
        "{count} reminders due over 2 s: all fired exactly once; lag (event recorded − due) \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; scheduler lag (firing started − due) p50 \
         {:?}, p99 {:?}; {} stale, {} failed; last one about {elapsed} ms after the first was due",
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        quantile(&lags, 1.0),
        stats.lag_p50,
        stats.lag_p99,
        stats.stale,
        stats.failed,
    );
}

/// A `reminder_node` process and its output lines.
struct Node {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Node {
    async fn start(url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_reminder_node"))
            .args(["--database-url", url])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start reminder_node");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("ready in time")
            .unwrap();
        assert_eq!(first.as_deref(), Some("ready"));
        Self { child, lines }
    }

    async fn sigkill(mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().await.unwrap();
        assert!(!exit.success(), "killed: {exit:?}");
        while let Ok(Some(_)) = self.lines.next_line().await {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_reminders_fire_loses_none_and_fires_none_twice_after_restart() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let count = integration_tests::env_or("REMINDER_KILLS_COUNT", 2_000usize);
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let events: Arc<dyn EventStore> = Arc::new(events);
    // Due from the start, over two seconds: firing is in full swing when the kill lands.
    seed(
        Arc::clone(&events),
        count,
        Utc::now() + chrono::Duration::milliseconds(500),
        chrono::Duration::seconds(2),
    )
    .await
    .unwrap();
    let expected = i64::try_from(count).unwrap();

    let node = Node::start(db.url()).await;
    wait_until(Duration::from_secs(60), "a fifth fired", || async {
        audit(&pool).await.unwrap().events >= expected / 5
    })
    .await;
    node.sigkill().await;
    let at_kill = audit(&pool).await.unwrap();
    assert!(
        at_kill.events > 0 && at_kill.events < expected && at_kill.reminders_left > 0,
        "the kill landed while reminders were firing: {at_kill:?}"
    );

    let node = Node::start(db.url()).await;
    wait_until(Duration::from_secs(60), "every reminder fired", || async {
        audit(&pool).await.unwrap().reminders_left == 0
    })
    .await;
    node.sigkill().await;

    let found = audit(&pool).await.unwrap();
    println!("killed at {at_kill:?}; after the restart {found:?}");
    assert_eq!(found.events, expected, "none lost: {found:?}");
    assert_eq!(found.wallets_with_one, expected, "{found:?}");
    assert_eq!(found.wallets_with_more, 0, "none fired twice: {found:?}");
    assert_eq!(found.distinct_commands, expected, "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_of_a_shard_that_moves_fire_on_its_new_owner_exactly_once() {
    use integration_tests::wallet_cluster::{SERIAL, connect, owners, start_nodes, wait_settled};

    let _serial = SERIAL.lock().await;
    let Some(db) = fresh_database().await else {
        return;
    };
    let pool = connect(db.url()).await;
    let nodes = start_nodes(
        env!("CARGO_BIN_EXE_cluster_node"),
        db.url(),
        "reminders",
        2,
        |args| {
            args.reminders = true;
            args.max_releases_per_tick = integration_tests::wallet_cluster::SHARD_COUNT as usize;
        },
    )
    .await;
    wait_settled(&pool, &nodes, Duration::from_secs(15)).await;

    // 600 wallets' reminders, due over four seconds from a second from now.
    let count = 600usize;
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let events: Arc<dyn EventStore> = Arc::new(events);
    seed(
        Arc::clone(&events),
        count,
        Utc::now() + chrono::Duration::seconds(1),
        chrono::Duration::seconds(4),
    )
    .await
    .unwrap();
    let expected = i64::try_from(count).unwrap();
    wait_until(Duration::from_secs(30), "a quarter fired", || async {
        audit(&pool).await.unwrap().events >= expected / 4
    })
    .await;

    // Kill the first node; the reminders of its shards still pending then can only be fired
    // by the survivor, once the shards move to it.
    let victim = nodes[0].node_id().unwrap();
    let map = owners(&pool).await;
    let killed = Utc::now();
    nodes[0].kill().await;
    // A commit the killed node had sent is finished by the server within this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending: Vec<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM reminders WHERE aggregate_type = 'wallet'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let moving: Vec<&String> = pending
        .iter()
        .filter(|id| {
            map.get(&integration_tests::wallet_cluster::shard(id))
                .copied()
                .flatten()
                == Some(victim)
        })
        .collect();
    assert!(
        moving.len() >= 10,
        "the killed node's shards held only {} due reminders",
        moving.len()
    );

    wait_until(Duration::from_secs(45), "every reminder fired", || async {
        audit(&pool).await.unwrap().reminders_left == 0
    })
    .await;
    let found = audit(&pool).await.unwrap();
    assert_eq!(found.events, expected, "none lost: {found:?}");
    assert_eq!(
        found.wallets_with_one, expected,
        "none fired twice: {found:?}"
    );
    assert_eq!(found.distinct_commands, expected, "{found:?}");
    // The moved shards' reminders were fired after the kill, so by the survivor.
    let fired_after: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE aggregate_type = 'wallet' \
         AND aggregate_id = ANY($1) AND recorded_at > $2",
    )
    .bind(moving.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    .bind(killed)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        fired_after,
        i64::try_from(moving.len()).unwrap(),
        "every reminder of the moved shards fired on the new owner"
    );
    println!(
        "{count} reminders on two nodes; {} of the killed node's shards' reminders fired by the \
         survivor; {found:?}",
        moving.len()
    );
    for node in &nodes[1..] {
        node.kill().await;
    }
}
