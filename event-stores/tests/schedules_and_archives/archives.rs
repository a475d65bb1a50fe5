//! The snapshot archive contract (`event_stores::contract::archive`) on every archive: in
//! memory, files in a directory, and PostgreSQL.

use std::sync::Arc;

use event_stores::contract::archive as cases;
use event_stores::testing::{TestDatabase, fresh_database};
use event_stores::{FileSnapshotArchive, InMemorySnapshotArchive, SnapshotArchive};

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("esa-archive-{}", uuid::Uuid::now_v7()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

async fn postgres() -> Option<(Arc<dyn SnapshotArchive>, TestDatabase)> {
    let database = fresh_database().await?;
    let (events, _) = database
        .stores(event_stores::StoreLimits::default())
        .await
        .unwrap();
    let archive = event_stores::PgSnapshotArchive::new(events.pool().clone());
    Some((Arc::new(archive), database))
}

macro_rules! on_every_archive {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    cases::$case(Arc::new(InMemorySnapshotArchive::new())).await;
                }
            )*
        }
        mod files {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let dir = TempDir::new();
                    cases::$case(Arc::new(FileSnapshotArchive::new(&dir.0))).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let Some((archive, _database)) = super::postgres().await else { return };
                    cases::$case(archive).await;
                }
            )*
        }
    };
}

on_every_archive!(
    archived_snapshots_read_back_unchanged_newest_first,
    load_archived_returns_the_newest_at_or_before_a_version,
);

#[tokio::test]
async fn a_damaged_archive_file_is_a_corrupt_error_not_a_panic() {
    let dir = TempDir::new();
    let archive = FileSnapshotArchive::new(&dir.0);
    let stream = event_stores::StreamId::new("account", "a-1").unwrap();
    let record = event_stores::contract::snapshot(&stream, 3, chrono::Utc::now());
    archive.archive(record).await.unwrap();
    let file = files_under(&dir.0).pop().expect("the archived file");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&file, bytes).unwrap();
    let loaded = archive.load_archived(&stream, 10).await;
    assert!(
        matches!(loaded, Err(event_stores::StoreError::Corrupt(_))),
        "{loaded:?}"
    );
}
