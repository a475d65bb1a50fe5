//! `sample-app cluster-demo` at a small size on a fresh PostgreSQL database: three
//! `serve --cluster` processes under load, one SIGKILLed, the shards of the dead node taken
//! over, and the SQL audit of the `events` table passing.
//!
//! Skipped (returns early) when `DATABASE_URL` is unset, except under `CI=true`, where
//! `fresh_database` panics instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use event_stores::testing::fresh_database;

/// The `key=value` pairs of the report's `cluster-demo:` line.
fn summary(stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("cluster-demo: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn number(summary: &HashMap<String, String>, key: &str) -> u64 {
    summary
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} in {summary:?}"))
}

/// `a/b` → (a, b).
fn fraction(summary: &HashMap<String, String>, key: &str) -> (u64, u64) {
    let value = summary
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"));
    let (a, b) = value.split_once('/').expect("a/b");
    (a.parse().unwrap(), b.parse().unwrap())
}

#[tokio::test]
async fn a_node_killed_under_load_loses_no_acknowledged_command_and_its_shards_move() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let url = db.url().to_owned();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sample-app"))
            .args(["cluster-demo", "--nodes", "3", "--accounts", "40"])
            .args(["--concurrency", "8", "--seed", "7"])
            .args(["--kill-after-ms", "1500", "--load-after-recovery-ms", "500"])
            .args(["--max-connections", "4", "--database-url", &url])
            .env_remove("RUST_LOG")
            .output()
            .expect("run sample-app cluster-demo")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "cluster-demo failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let s = summary(&stdout);
    let context = format!("{s:?}\nstdout:\n{stdout}");

    assert_eq!(s["audit"], "passed", "{context}");
    assert_eq!(number(&s, "nodes"), 3, "{context}");
    // Seed 7 picks node 7 % 3 + 1 = 2; what matters is that one was killed.
    assert!(s["killed"].starts_with("node-"), "{context}");
    assert!(
        stdout.contains("with SIGKILL after"),
        "no kill reported: {context}"
    );

    // The dead node owned about a third of the shards, and all of them moved to the
    // survivors (rendezvous hashing moves nothing else).
    let shards = number(&s, "shards");
    let victim_shards = number(&s, "victim_shards");
    let moves = number(&s, "shard_moves");
    assert!(
        (shards / 5..=shards / 2).contains(&victim_shards),
        "victim owned {victim_shards} of {shards} shards: {context}"
    );
    assert!(moves >= victim_shards, "{moves} moves: {context}");

    // Its aggregates answered again, and that was measured.
    let recovery = number(&s, "recovery_ms");
    assert!(
        (1..20_000).contains(&recovery),
        "recovery {recovery} ms: {context}"
    );

    // The audit counted real work: the 40 opens, the probes, and the load.
    let acknowledged = number(&s, "acknowledged");
    assert!(acknowledged > 100, "{context}");
    assert_eq!(number(&s, "stored_once"), acknowledged, "{context}");
    for key in ["missing", "duplicated", "unexpected", "failures"] {
        assert_eq!(number(&s, key), 0, "{key}: {context}");
    }
    assert_eq!(fraction(&s, "balances"), (40, 40), "{context}");
    assert_eq!(fraction(&s, "served_balances"), (40, 40), "{context}");
    // The cluster's own metrics reach /metrics through the Prometheus recorder.
    assert!(number(&s, "cluster_metrics") > 0, "{context}");
    assert_eq!(fraction(&s, "left_gracefully"), (2, 2), "{context}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
