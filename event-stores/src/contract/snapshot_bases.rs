//! Contract cases for delta snapshots: a record's base reference survives every write and read
//! path, and no deletion (retention, by version, by age) removes a base that a kept delta names.

use std::sync::Arc;

use chrono::TimeDelta;

use super::{fresh_stream, now_micros, saved_versions, snapshot};
use crate::{SnapshotBase, SnapshotRecord, SnapshotStore, StreamId};

/// A delta record of `stream` at `version` naming `base`.
fn delta(stream: &StreamId, version: u64, base: &SnapshotRecord) -> SnapshotRecord {
    let mut record = snapshot(stream, version, now_micros());
    record.compression = "zstd-delta".into();
    record.base = Some(SnapshotBase {
        version: base.version,
        checksum: base.checksum,
    });
    record
}

/// Saves full snapshots at `fulls` and, for each `(version, base)` in `deltas`, a delta naming
/// the full snapshot at `base`.
async fn save_chain(
    store: &dyn SnapshotStore,
    stream: &StreamId,
    fulls: &[u64],
    deltas: &[(u64, u64)],
) {
    for &version in fulls {
        store
            .save(snapshot(stream, version, now_micros()))
            .await
            .unwrap();
    }
    for &(version, base) in deltas {
        let base = snapshot(stream, base, now_micros());
        store.save(delta(stream, version, &base)).await.unwrap();
    }
}

/// A delta's base (version and checksum, high bit set) comes back from a save with read-back,
/// from every load and from `list`; a full snapshot's is `None`, also when saves with and
/// without a base share a batch.
pub async fn a_delta_keeps_its_base_through_every_write_and_read(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("delta-base");
    let full = snapshot(&stream, 3, now_micros());
    let mut record = delta(&stream, 8, &full);
    record.taken_at = now_micros() + TimeDelta::seconds(1);
    assert_eq!(
        store.save_and_read_back(full.clone()).await.unwrap().base,
        None
    );
    assert_eq!(
        store.save_and_read_back(record.clone()).await.unwrap(),
        record
    );
    let base = record.base;
    assert!(base.is_some_and(|b| b.checksum > i64::MAX as u64));
    assert_eq!(
        store.load_latest(&stream).await.unwrap().unwrap().base,
        base
    );
    let at_version = store.load_at_or_before_version(&stream, 8).await.unwrap();
    assert_eq!(at_version.unwrap().base, base);
    let at_time = store
        .load_at_or_before_time(&stream, record.taken_at)
        .await
        .unwrap();
    assert_eq!(at_time.unwrap().base, base);
    let listed: Vec<_> = store
        .list(&stream, 0, u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.version, r.base))
        .collect();
    assert_eq!(listed, vec![(8, base), (3, None)]);

    // Concurrent saves (batched where the backend batches), with and without a base.
    let records: Vec<SnapshotRecord> = (0..16u64)
        .map(|i| {
            let stream = fresh_stream("delta-many");
            if i % 2 == 0 {
                snapshot(&stream, 2, now_micros())
            } else {
                delta(&stream, 2, &snapshot(&stream, 1, now_micros()))
            }
        })
        .collect();
    let tasks: Vec<_> = records
        .iter()
        .map(|record| {
            let (store, record) = (Arc::clone(&store), record.clone());
            tokio::spawn(async move { store.save_and_read_back(record).await })
        })
        .collect();
    for (task, record) in tasks.into_iter().zip(&records) {
        assert_eq!(&task.await.unwrap().unwrap(), record);
    }
}

/// `retain_newest(n)` keeps the newest `n` snapshots plus the bases they name, and deletes a
/// base once no kept delta names it. `retain_newest_at_or_below(v, n)` counts only those at or
/// below `v` and leaves those above it, and the bases they name.
pub async fn retain_newest_keeps_the_bases_of_kept_deltas(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("retain-bases");
    save_chain(
        store.as_ref(),
        &stream,
        &[1, 4],
        &[(2, 1), (3, 1), (5, 4), (6, 4)],
    )
    .await;
    assert_eq!(store.retain_newest(&stream, 2).await.unwrap(), 3);
    assert_eq!(saved_versions(store.as_ref(), &stream).await, vec![6, 5, 4]);
    assert_eq!(store.retain_newest(&stream, 1).await.unwrap(), 1);
    assert_eq!(saved_versions(store.as_ref(), &stream).await, vec![6, 4]);
    save_chain(store.as_ref(), &stream, &[7], &[]).await;
    assert_eq!(store.retain_newest(&stream, 1).await.unwrap(), 2);
    assert_eq!(saved_versions(store.as_ref(), &stream).await, vec![7]);

    // Above the bound: 12, a delta naming 8, neither counts nor goes, and keeps 8.
    save_chain(store.as_ref(), &stream, &[8, 9, 10], &[(12, 8)]).await;
    assert_eq!(
        store
            .retain_newest_at_or_below(&stream, 10, 1)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        saved_versions(store.as_ref(), &stream).await,
        vec![12, 10, 8]
    );
    assert_eq!(
        store
            .retain_newest_at_or_below(&stream, 11, 0)
            .await
            .unwrap(),
        0,
        "keeps 10 (0 counts as 1) and 8, the base of 12"
    );
    assert_eq!(
        store
            .retain_newest_at_or_below(&stream, 7, 1)
            .await
            .unwrap(),
        0,
        "nothing at or below 7"
    );
    assert_eq!(
        saved_versions(store.as_ref(), &stream).await,
        vec![12, 10, 8]
    );
}

/// `delete_older_than(v)` keeps the snapshots below `v` that a snapshot at or after `v` names
/// as its base.
pub async fn delete_older_than_keeps_the_bases_of_later_deltas(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("older-bases");
    save_chain(store.as_ref(), &stream, &[1, 3], &[(2, 1), (4, 1), (5, 3)]).await;
    assert_eq!(store.delete_older_than(&stream, 4).await.unwrap(), 1);
    assert_eq!(
        saved_versions(store.as_ref(), &stream).await,
        vec![5, 4, 3, 1]
    );
    assert_eq!(store.delete_older_than(&stream, 5).await.unwrap(), 2);
    assert_eq!(saved_versions(store.as_ref(), &stream).await, vec![5, 3]);
}

/// `delete` refuses (false) a base that another snapshot names, and deletes it once the
/// deltas naming it are gone.
pub async fn delete_refuses_a_base_that_a_delta_names(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("delete-bases");
    save_chain(store.as_ref(), &stream, &[1], &[(2, 1), (3, 1)]).await;
    assert!(!store.delete(&stream, 1).await.unwrap());
    assert_eq!(saved_versions(store.as_ref(), &stream).await, vec![3, 2, 1]);
    assert!(store.delete(&stream, 3).await.unwrap());
    assert!(store.delete(&stream, 2).await.unwrap());
    assert!(store.delete(&stream, 1).await.unwrap());
    assert_eq!(
        saved_versions(store.as_ref(), &stream).await,
        Vec::<u64>::new()
    );
}
