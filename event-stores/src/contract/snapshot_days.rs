//! Contract cases for per-day snapshot statistics: additions sum per type and day (also when
//! made concurrently), reads start at a day and go oldest first, bad input stores nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use uuid::Uuid;

use crate::{InvalidInput, SnapshotDay, SnapshotStore, StoreError};

/// A type name no other case uses.
fn fresh_type() -> String {
    format!("days-{}", Uuid::now_v7())
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
}

fn figures(
    d: u32,
    (created, deleted, archived, bytes): (u64, u64, u64, u64),
    micros: u64,
) -> SnapshotDay {
    SnapshotDay {
        day: day(d),
        created,
        deleted,
        archived,
        bytes,
        creation_time: Duration::from_micros(micros),
    }
}

/// Two additions naming the same days are summed field by field; a read from a day on returns
/// the days from then, oldest first; another type's days are separate.
pub async fn snapshot_days_add_up_per_day_and_read_back_oldest_first(
    store: Arc<dyn SnapshotStore>,
) {
    let kind = fresh_type();
    store
        .add_snapshot_days(
            &kind,
            &[
                figures(3, (0, 1, 0, 0), 0),
                figures(1, (2, 0, 0, 100), 3_000),
            ],
        )
        .await
        .unwrap();
    store
        .add_snapshot_days(
            &kind,
            &[
                figures(1, (1, 0, 2, 50), 1_500),
                figures(2, (1, 0, 0, 9), 7),
            ],
        )
        .await
        .unwrap();
    let all = store.snapshot_days(&kind, day(1)).await.unwrap();
    assert_eq!(
        all,
        vec![
            figures(1, (3, 0, 2, 150), 4_500),
            figures(2, (1, 0, 0, 9), 7),
            figures(3, (0, 1, 0, 0), 0),
        ]
    );
    assert_eq!(all[0].mean_creation_time(), Duration::from_micros(1_500));
    assert_eq!(
        store.snapshot_days(&kind, day(2)).await.unwrap(),
        all[1..].to_vec()
    );
    assert!(store.snapshot_days(&kind, day(4)).await.unwrap().is_empty());
    assert!(
        store
            .snapshot_days(&fresh_type(), day(1))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Additions to one day from many concurrent writers all count.
pub async fn concurrent_snapshot_day_additions_all_count(store: Arc<dyn SnapshotStore>) {
    let kind = Arc::new(fresh_type());
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (store, kind) = (Arc::clone(&store), Arc::clone(&kind));
            tokio::spawn(async move {
                for _ in 0..10 {
                    store
                        .add_snapshot_days(&kind, &[figures(5, (1, 0, 0, 7), 2)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        store.snapshot_days(&kind, day(1)).await.unwrap(),
        vec![figures(5, (160, 0, 0, 1_120), 320)]
    );
}

/// A figure beyond what a store keeps, or a bad type, is a typed error, and nothing of that
/// addition is stored (not even its valid days).
pub async fn a_bad_snapshot_day_addition_is_refused_and_stores_nothing(
    store: Arc<dyn SnapshotStore>,
) {
    let kind = fresh_type();
    let error = store
        .add_snapshot_days(
            &kind,
            &[
                figures(1, (1, 0, 0, 10), 1),
                figures(2, (0, 0, 0, u64::MAX), 0),
            ],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::InvalidInput(InvalidInput::DayFigureTooLarge { what: "bytes", .. })
        ),
        "{error:?}"
    );
    assert!(store.snapshot_days(&kind, day(1)).await.unwrap().is_empty());
    let error = store
        .add_snapshot_days("", &[figures(1, (1, 0, 0, 0), 0)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::InvalidInput(InvalidInput::EmptyId { .. })
        ),
        "{error:?}"
    );
}
