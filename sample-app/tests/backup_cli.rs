//! `sample-app backup export|import`, run as the real binary: a PostgreSQL database seeded by
//! the service's own executor is exported and imported into a fresh one (the same rows, by
//! SQL), an import into the same database again finds everything present, a truncated file is
//! refused with nothing stored, and without a database an import only verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aggregate_actors::Executor;
use event_stores::testing::fresh_database;
use sample_app::domain::{Account, AccountCommand, Amount, BoundedText, Dated};
use sample_app::ledger::Stores;
use sqlx::PgPool;

fn backup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .arg("backup")
        .args(args)
        // Only the --database-url given counts (`make test` sets DATABASE_URL for everyone).
        .env_remove("DATABASE_URL")
        .output()
        .expect("run sample-app backup")
}

fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "backup failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Rows of both tables, as counts and digests of everything but what a target assigns itself.
async fn audit(url: &str) -> (i64, String, i64, String) {
    let pool = PgPool::connect(url).await.unwrap();
    let (events, event_digest): (i64, String) = sqlx::query_as(
        "SELECT count(*), coalesce(md5(string_agg((to_jsonb(e) - 'recorded_at' - 'position' \
         - 'tx')::text, ',' ORDER BY aggregate_type, aggregate_id, version)), '') FROM events e",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (snapshots, snapshot_digest): (i64, String) = sqlx::query_as(
        "SELECT count(*), coalesce(md5(string_agg(to_jsonb(s)::text, ',' \
         ORDER BY aggregate_type, aggregate_id, version)), '') FROM snapshots s",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (events, event_digest, snapshots, snapshot_digest)
}

/// Ten accounts with six events each, through the service's executor, and a snapshot of three.
async fn seed(url: &str) {
    let stores = Stores::postgres(url, 4).await.unwrap();
    let executor: Executor = stores.executor_with(None).unwrap();
    for n in 0..10 {
        let id = format!("acc-{n}");
        let open = AccountCommand::Open {
            owner: BoundedText::new(format!("cus-{n}")).unwrap(),
        };
        executor
            .execute::<Account>(&id, Dated::now(open))
            .await
            .unwrap();
        for cents in 1..=5 {
            let deposit = AccountCommand::Deposit {
                amount_cents: Amount::from_cents(cents * 100).unwrap(),
                reference: BoundedText::new(format!("deposit {cents}")).unwrap(),
            };
            executor
                .execute::<Account>(&id, Dated::now(deposit))
                .await
                .unwrap();
        }
        if n < 3 {
            executor.snapshot_now::<Account>(&id).await.unwrap();
        }
    }
    executor.shutdown().await;
}

/// A path in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("{name}-{}.esb", uuid::Uuid::new_v4())))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn size(path: &Path) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exports_a_database_and_imports_it_into_a_fresh_one_with_the_same_rows() {
    let Some(source) = fresh_database().await else {
        return;
    };
    let Some(target) = fresh_database().await else {
        return;
    };
    seed(source.url()).await;
    let source_rows = audit(source.url()).await;
    assert_eq!(source_rows.0, 60);
    assert!(source_rows.2 >= 3, "the snapshots taken: {source_rows:?}");

    let file = TempFile::new("backup-cli");
    let exported = succeeded(&backup(&[
        "export",
        "--out",
        file.path(),
        "--database-url",
        source.url(),
    ]));
    assert!(
        exported.starts_with("exported 60 events of 10 streams"),
        "{exported}"
    );
    assert!(
        exported.contains(&format!("{} bytes", size(&file.0))),
        "{exported}"
    );
    assert!(
        !Path::new(&format!("{}.partial", file.path())).exists(),
        "the partial file was renamed"
    );

    let imported = succeeded(&backup(&[
        "import",
        "--in",
        file.path(),
        "--database-url",
        target.url(),
    ]));
    assert!(
        imported.contains("60 events written, 0 already present"),
        "{imported}"
    );
    assert_eq!(audit(target.url()).await, source_rows, "the same rows");

    // Again: everything is there already, and nothing changes.
    let again = succeeded(&backup(&[
        "import",
        "--in",
        file.path(),
        "--database-url",
        target.url(),
    ]));
    assert!(
        again.contains("0 events written, 60 already present"),
        "{again}"
    );
    assert_eq!(audit(target.url()).await, source_rows);

    // A truncated copy is refused, with a message that says so, and stores nothing.
    let Some(empty) = fresh_database().await else {
        return;
    };
    let truncated = TempFile::new("backup-cli-truncated");
    let bytes = std::fs::read(&file.0).unwrap();
    std::fs::write(&truncated.0, &bytes[..bytes.len() - 40]).unwrap();
    let refused = backup(&[
        "import",
        "--in",
        truncated.path(),
        "--database-url",
        empty.url(),
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("truncated"), "{stderr}");
    assert_eq!(audit(empty.url()).await.0, 0, "nothing stored");

    // One account of the type, and an import without a database: a verification.
    let one = TempFile::new("backup-cli-one");
    let exported = succeeded(&backup(&[
        "export",
        "--out",
        one.path(),
        "--type",
        "accounts",
        "--id",
        "acc-4",
        "--database-url",
        source.url(),
    ]));
    assert!(
        exported.starts_with("exported 6 events of 1 streams and "),
        "{exported}"
    );
    let verified = succeeded(&backup(&["import", "--in", one.path()]));
    assert!(
        verified.contains("6 events written") && verified.contains("only verified"),
        "{verified}"
    );
}

#[test]
fn ids_without_a_type_and_a_bad_time_are_refused_by_the_command_line() {
    let out = TempFile::new("backup-cli-refused");
    let no_type = backup(&["export", "--out", out.path(), "--id", "acc-1"]);
    assert!(!no_type.status.success());
    assert!(String::from_utf8_lossy(&no_type.stderr).contains("--type"));
    let bad_time = backup(&["export", "--out", out.path(), "--from", "yesterday"]);
    assert!(!bad_time.status.success());
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("RFC 3339"));
    assert!(!out.0.exists());
}
