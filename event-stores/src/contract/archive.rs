//! Contract cases for a [`SnapshotArchive`]: each takes an archive that holds nothing of the
//! streams it makes (fresh stream ids).

use std::sync::Arc;

use chrono::{SubsecRound, Utc};

use super::{fresh_stream, snapshot};
use crate::{SnapshotArchive, SnapshotBase};

/// Archived records come back unchanged (every field, a delta's base included), newest first,
/// within a version range; archiving again replaces; delete removes one version.
pub async fn archived_snapshots_read_back_unchanged_newest_first(
    archive: Arc<dyn SnapshotArchive>,
) {
    let stream = fresh_stream("archived");
    let taken_at = Utc::now().trunc_subsecs(6);
    let mut records: Vec<_> = (1..=4)
        .map(|v| snapshot(&stream, v * 10, taken_at))
        .collect();
    records[3].base = Some(SnapshotBase {
        version: 30,
        checksum: u64::MAX - 30,
    });
    for record in &records {
        archive.archive(record.clone()).await.unwrap();
    }
    let listed = archive.list_archived(&stream, 0, u64::MAX).await.unwrap();
    assert_eq!(
        listed.iter().map(|a| a.record.version).collect::<Vec<_>>(),
        [40, 30, 20, 10]
    );
    assert_eq!(
        listed[0].record, records[3],
        "every field, the base included"
    );
    assert!(listed[0].archived_at >= taken_at - chrono::Duration::seconds(5));
    assert_eq!(
        archive
            .list_archived(&stream, 15, 30)
            .await
            .unwrap()
            .iter()
            .map(|a| a.record.version)
            .collect::<Vec<_>>(),
        [30, 20]
    );

    archive.archive(records[1].clone()).await.unwrap();
    assert_eq!(
        archive
            .list_archived(&stream, 0, u64::MAX)
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(archive.delete_archived(&stream, 20).await.unwrap());
    assert!(!archive.delete_archived(&stream, 20).await.unwrap());
    assert_eq!(
        archive
            .list_archived(&stream, 0, u64::MAX)
            .await
            .unwrap()
            .len(),
        3
    );
    let other = fresh_stream("archived");
    assert!(
        archive
            .list_archived(&other, 0, u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `load_archived` gives the newest archived record at or before a version.
pub async fn load_archived_returns_the_newest_at_or_before_a_version(
    archive: Arc<dyn SnapshotArchive>,
) {
    let stream = fresh_stream("archived");
    let taken_at = Utc::now().trunc_subsecs(6);
    for version in [5, 50, 500] {
        archive
            .archive(snapshot(&stream, version, taken_at))
            .await
            .unwrap();
    }
    let at = |v| {
        let archive = Arc::clone(&archive);
        let stream = stream.clone();
        async move {
            archive
                .load_archived(&stream, v)
                .await
                .unwrap()
                .map(|r| r.version)
        }
    };
    assert_eq!(at(4).await, None);
    assert_eq!(at(5).await, Some(5));
    assert_eq!(at(499).await, Some(50));
    assert_eq!(at(u64::MAX).await, Some(500));
}
