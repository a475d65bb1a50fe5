//! `sample-app demo` runs to completion on small sizes and prints its tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn demo(extra: &[&str], database_url: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sample-app"));
    command.args([
        "demo",
        "--accounts",
        "20",
        "--commands",
        "800",
        "--concurrency",
        "8",
    ]);
    command.args(extra);
    match database_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    let output = command.output().expect("run sample-app demo");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "demo failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn assert_prints_the_tables(stdout: &str) {
    for expected in [
        "Workload: 20 accounts, 10 customers, 800 commands",
        "rejected by domain rules",
        "events replayed: mean",
        "events replayed: max",
        "activation time: p99",
        "activation time: total",
        "bytes before compression",
        "skipped as invalid on load",
        "Time travel on the busiest account",
        "no snapshots",
        "(mid-run)",
        "OK: every state rebuilt from snapshots equals its full replay",
        "Read model: customer totals kept by the projection customer_totals",
        "this run's 10 customers hold",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("failed 0"), "{stdout}");
    let caught_up = stdout
        .lines()
        .find(|line| line.starts_with("caught up with the last event written"))
        .expect("the read model's catch-up line");
    assert!(caught_up.contains(": yes,"), "{caught_up}");
    let projection = stdout
        .lines()
        .find(|line| line.starts_with("projection: position"))
        .expect("the projection's stats line");
    assert!(projection.ends_with("caught up: yes"), "{projection}");
    let equal = stdout
        .lines()
        .find(|line| line.starts_with("states equal to full replay"))
        .expect("the comparison row");
    assert!(
        equal.contains("20 / 20") && equal.contains("10 / 10"),
        "{equal}"
    );
    // The reminders section: four accounts reviewed once each, the one unfrozen in time not.
    assert!(
        stdout.contains("Reminders: accounts frozen for 200ms get a review"),
        "{stdout}"
    );
    let reviewed: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("rev-") && !line.contains("unfrozen"))
        .collect();
    assert_eq!(reviewed.len(), 4, "{stdout}");
    assert!(
        reviewed.iter().all(|line| line.ends_with(" 1")),
        "{reviewed:?}"
    );
    let cancelled = stdout
        .lines()
        .find(|line| line.starts_with("rev-") && line.contains("unfrozen"))
        .expect("the cancelled review's line");
    assert!(cancelled.ends_with("reviews 0"), "{cancelled}");
    let scheduler = stdout
        .lines()
        .find(|line| line.starts_with("scheduler: fired"))
        .expect("the scheduler's line");
    assert!(
        scheduler.starts_with("scheduler: fired 4, refused 0, stale 0, failed 0"),
        "{scheduler}"
    );
    assert!(!stdout.contains("PROBLEM"), "{stdout}");
}

#[test]
fn the_demo_on_in_memory_stores_runs_to_completion_and_prints_the_comparison() {
    let stdout = demo(&["--seed", "7"], None);
    assert!(stdout.contains("Ledger demo on in-memory"), "{stdout}");
    assert_prints_the_tables(&stdout);
}

#[tokio::test]
async fn the_demo_on_postgresql_runs_to_completion_and_prints_the_comparison() {
    let Some(db) = event_stores::testing::fresh_database().await else {
        return;
    };
    let url = db.url().to_owned();
    let stdout = tokio::task::spawn_blocking(move || demo(&["--max-connections", "4"], Some(&url)))
        .await
        .unwrap();
    assert!(stdout.contains("Ledger demo on PostgreSQL"), "{stdout}");
    assert_prints_the_tables(&stdout);
}
