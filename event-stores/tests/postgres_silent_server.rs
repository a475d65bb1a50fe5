//! Reads on a server that stops answering mid-statement (its backend SIGSTOPped: no reset, no
//! error, and no server-side timeout fires, as behind a network that drops packets): each is
//! answered within the client timeout as [`StoreError::Unavailable`], its connection is closed,
//! and the next read, on a new connection, succeeds. Without the bound an activation, a catch-up
//! or the reminder scheduler would wait for as long as TCP takes to give up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use event_stores::contract::{fresh_stream, numbered_events};
use event_stores::testing::fresh_database;
use event_stores::{
    EventStore, PgEventStore, PgSnapshotStore, ReadQuery, SnapshotStore, StoreError, StoreLimits,
    StoreResult,
};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const CLIENT_TIMEOUT: Duration = Duration::from_millis(800);

/// Runs `read` while `table` is locked, catches the server process serving it
/// waiting for the lock, stops that process (SIGSTOP) and lets the table go: the read has been
/// sent and will never be answered. Returns what the read answered and how long it took; the
/// process is resumed before returning.
async fn read_on_a_silent_backend<T: Send + 'static>(
    admin: &PgPool,
    table: &str,
    application_name: &str,
    read: impl Future<Output = StoreResult<T>> + Send + 'static,
) -> (StoreResult<T>, Duration) {
    let mut blocker = admin.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *blocker)
    .await
    .unwrap();
    let sent = Instant::now();
    let read = tokio::spawn(read);
    let backend: i32 = loop {
        let waiting: Option<(i32,)> = sqlx::query_as(
            "SELECT pid FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND application_name = $1
               AND datname = current_database()",
        )
        .bind(application_name)
        .fetch_optional(admin)
        .await
        .unwrap();
        if let Some((pid,)) = waiting {
            break pid;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "the read never waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &backend.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {backend}: {status}");
    };
    signal("-STOP");
    blocker.rollback().await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(10), read).await;
    let took = sent.elapsed();
    signal("-CONT");
    (answered.expect("no answer within 10 s").unwrap(), took)
}

async fn setup() -> Option<(event_stores::testing::TestDatabase, PgEventStore, PgPool)> {
    let db = fresh_database().await?;
    let config = db
        .config()
        .application_name("silent-server")
        .with_client_timeout(CLIENT_TIMEOUT);
    let store = PgEventStore::connect(&config).await.unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap();
    Some((db, store, admin))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_read_the_server_never_answers_is_unavailable_within_the_client_timeout() {
    let Some((_db, store, admin)) = setup().await else {
        return;
    };
    let stream = fresh_stream("silent-read");
    store
        .append(&stream, 0, numbered_events(0, 3))
        .await
        .unwrap();

    let reading = store.clone();
    let read_stream = stream.clone();
    let (answer, took) = read_on_a_silent_backend(&admin, "events", "silent-server", async move {
        reading.read_stream(&read_stream, ReadQuery::all()).await
    })
    .await;
    assert!(
        matches!(answer, Err(StoreError::Unavailable { .. })),
        "{answer:?}"
    );
    assert!(took < CLIENT_TIMEOUT + Duration::from_secs(2), "{took:?}");
    assert_eq!(
        store
            .read_stream(&stream, ReadQuery::all())
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_activation_read_the_server_never_answers_is_unavailable_within_the_client_timeout() {
    let Some((db, store, admin)) = setup().await else {
        return;
    };
    let stream = fresh_stream("silent-start");
    store
        .append(&stream, 0, numbered_events(0, 2))
        .await
        .unwrap();
    // Events and snapshots in one database: activation reads both in one statement.
    let snapshots = PgSnapshotStore::from_pool(store.pool().clone(), StoreLimits::default())
        .await
        .unwrap();
    assert!(
        store
            .read_start(&stream, &snapshots, 100)
            .await
            .unwrap()
            .is_some(),
        "the combined activation read is used"
    );

    let reading = store.clone();
    let read_stream = stream.clone();
    let (answer, took) = read_on_a_silent_backend(&admin, "events", "silent-server", async move {
        reading.read_start(&read_stream, &snapshots, 100).await
    })
    .await;
    assert!(
        matches!(answer, Err(StoreError::Unavailable { .. })),
        "{answer:?}"
    );
    assert!(took < CLIENT_TIMEOUT + Duration::from_secs(2), "{took:?}");
    let snapshots = PgSnapshotStore::from_pool(store.pool().clone(), StoreLimits::default())
        .await
        .unwrap();
    let start = store
        .read_start(&stream, &snapshots, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(start.events.len(), 2);
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_load_the_server_never_answers_is_unavailable_within_the_client_timeout() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let config = db
        .config()
        .application_name("silent-snapshots")
        .with_client_timeout(CLIENT_TIMEOUT);
    let snapshots = PgSnapshotStore::connect(&config).await.unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap();
    let stream = fresh_stream("silent-snapshot");
    assert!(snapshots.load_latest(&stream).await.unwrap().is_none());

    let reading = snapshots.clone();
    let read_stream = stream.clone();
    let (answer, took) =
        read_on_a_silent_backend(&admin, "snapshots", "silent-snapshots", async move {
            reading.load_latest(&read_stream).await
        })
        .await;
    assert!(
        matches!(answer, Err(StoreError::Unavailable { .. })),
        "{answer:?}"
    );
    assert!(took < CLIENT_TIMEOUT + Duration::from_secs(2), "{took:?}");
    assert!(snapshots.load_latest(&stream).await.unwrap().is_none());
}
