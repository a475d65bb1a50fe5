//! `sample-app snapshots rebuild`, run as the real binary on PostgreSQL: every account of a
//! database seeded by the service's executor gets a snapshot at its stream's version (checked
//! with SQL), and a second run finds them all current; `inspect`, another process, shows the
//! type's per-day snapshot statistics that both processes added to the store.

use std::process::Command;

use aggregate_actors::Executor;
use event_stores::testing::fresh_database;
use sample_app::domain::{Account, AccountCommand, BoundedText, Dated};
use sample_app::ledger::Stores;
use sqlx::PgPool;

fn rebuild(url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args([
            "snapshots",
            "rebuild",
            "--type",
            "accounts",
            "--database-url",
            url,
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn a_rebuild_snapshots_every_account_at_its_version_and_a_second_finds_them_current() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let stores = Stores::postgres(db.url(), 4).await.unwrap();
    let executor: Executor = stores.executor_with(None).unwrap();
    for n in 0..12 {
        let open = AccountCommand::Open {
            owner: BoundedText::new(format!("cus-{n}")).unwrap(),
        };
        executor
            .execute::<Account>(&format!("acc-{n:02}"), Dated::now(open))
            .await
            .unwrap();
    }
    executor.shutdown().await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    sqlx::query("DELETE FROM snapshots")
        .execute(&pool)
        .await
        .unwrap();

    let first = rebuild(db.url());
    assert!(first.contains("12 aggregates, 12 snapshotted"), "{first}");
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT aggregate_id, max(version) AS v FROM events \
         WHERE aggregate_type = 'account' GROUP BY 1) e \
         LEFT JOIN (SELECT aggregate_id, max(version) AS v FROM snapshots GROUP BY 1) s \
         USING (aggregate_id) WHERE s.v IS DISTINCT FROM e.v",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(behind, 0, "every account has a snapshot at its version");
    let second = rebuild(db.url());
    assert!(
        second.contains("0 snapshotted, 12 already current"),
        "{second}"
    );

    // 12 passivation snapshots by the executor above, 12 by the first rebuild: the store's
    // per-day figures, read with SQL, are what `inspect` prints.
    let (day, created, bytes): (chrono::NaiveDate, i64, i64) = sqlx::query_as(
        "SELECT day, created, bytes FROM snapshot_days WHERE aggregate_type = 'account' \
         ORDER BY day DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let total: i64 = sqlx::query_scalar(
        "SELECT sum(created)::bigint FROM snapshot_days WHERE aggregate_type = 'account'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(total, 24, "12 by the executor, 12 by the rebuild");
    let output = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args(["inspect", "--database-url", db.url(), "accounts", "acc-00"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let inspected = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{inspected}");
    assert!(
        inspected.contains("snapshots of every account per UTC day (all processes)"),
        "{inspected}"
    );
    assert!(
        inspected.contains(&format!(
            "  {day}  created {created}, deleted 0, archived 0, {bytes} B"
        )),
        "{inspected}"
    );
}
