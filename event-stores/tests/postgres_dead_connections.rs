//! Connections whose server session ended: after their backends were terminated (what a server
//! restart or `pg_terminate_backend` does), appends are answered truthfully. The first use of
//! such a connection gets the server's FATAL answer (57P01), which says the statement did not
//! run: it must be reported as not stored ([`StoreError::Unavailable`]), and the connection
//! closed. A connection kept after it fails its next statement with an I/O error, which
//! would report appends that never reached a live server as [`StoreError::Indeterminate`].
//!
//! Raw SQL checks that what was reported stored is in the table and what was reported not
//! stored is not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Append, Queued, queue, until_stats};
use event_stores::contract::{fresh_stream, numbered_events};
use event_stores::testing::{TestDatabase, fresh_database};
use event_stores::{
    AppendReceipt, EventStore, GroupCommit, PgConfig, PgEventStore, StoreError, StoreResult,
    StreamId,
};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A pool of the test's own on `db`, for raw SQL; its sessions are never terminated (they do
/// not carry the store's `application_name`).
async fn admin_pool(db: &TestDatabase) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap()
}

/// Terminates every session of `config`'s store on the database, from `admin`, and waits until
/// they are gone. Returns how many there were.
async fn terminate_store_backends(admin: &PgPool, config: &PgConfig) -> usize {
    // In the select list, not the WHERE clause: the planner may evaluate a WHERE clause's
    // conditions in any order, and this session must survive.
    let killed: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND application_name = $1",
    )
    .bind(&config.application_name)
    .fetch_all(admin)
    .await
    .unwrap();
    let pids: Vec<i32> = killed.iter().map(|&(pid, _)| pid).collect();
    let started = Instant::now();
    loop {
        // Each query is a transaction of its own, so it sees a fresh pg_stat_activity.
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&pids)
                .fetch_one(admin)
                .await
                .unwrap();
        if left == 0 {
            return pids.len();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{left} terminated backends still there after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Events stored for `stream`, by raw SQL.
async fn stored(admin: &PgPool, stream: &StreamId) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(stream.aggregate_type())
    .bind(stream.aggregate_id())
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Checks that `outcome` is stored or not stored, never indeterminate, and that the table
/// agrees: one event stored when it is `Ok`, none when it failed. True when it was stored.
async fn check_honest(
    admin: &PgPool,
    what: &str,
    stream: &StreamId,
    outcome: &StoreResult<AppendReceipt>,
) -> bool {
    eprintln!("{what}: {outcome:?}");
    match outcome {
        Ok(_) => {
            assert_eq!(stored(admin, stream).await, 1, "{what}: reported stored");
            true
        }
        Err(error @ StoreError::Unavailable { .. }) => {
            assert_eq!(
                stored(admin, stream).await,
                0,
                "{what}: reported not stored: {error}"
            );
            false
        }
        Err(error) => panic!("{what}: neither stored nor unavailable: {error:?}"),
    }
}

/// Sequential appends to fresh streams after every session of the store was terminated:
/// each is stored or reported not stored, never indeterminate; each dead connection fails at
/// most one append (it is closed then), and appends succeed again after them. With group commit
/// on, the first goes on the connection the store kept out of its pool after the warm-up
/// append; with it off, on a connection idle in the pool.
#[tokio::test(flavor = "multi_thread")]
async fn appends_after_their_connections_backends_were_terminated_are_never_indeterminate() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let admin = admin_pool(&db).await;
    for group_commit in [true, false] {
        let config = db.config().group_commit(group_commit);
        let store = PgEventStore::connect(&config).await.unwrap();
        let mode = format!("group commit {}", if group_commit { "on" } else { "off" });
        store
            .append(&fresh_stream("warm"), 0, numbered_events(0, 1))
            .await
            .unwrap();

        // sqlx pings a connection in a task of its own as it goes back to the pool: let that
        // happen before the sessions end, or the ping finds one dead and replaces it unseen.
        let settled = Instant::now();
        while store.pool().num_idle() < store.pool().size() as usize {
            assert!(
                settled.elapsed() < Duration::from_secs(5),
                "{mode}: a connection stayed out"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let terminated = terminate_store_backends(&admin, &config).await;
        assert!(terminated >= 1, "{mode}: the store had no session to end");

        let (mut failed, mut stored_in_a_row) = (0, 0);
        for attempt in 1..=terminated + 3 {
            let stream = fresh_stream("after_kill");
            let outcome = store.append(&stream, 0, numbered_events(0, 1)).await;
            let what = format!("{mode}, append {attempt} after {terminated} sessions ended");
            if check_honest(&admin, &what, &stream, &outcome).await {
                stored_in_a_row += 1;
            } else {
                failed += 1;
                stored_in_a_row = 0;
            }
        }
        assert!(failed >= 1, "{mode}: no append met a dead connection");
        assert!(
            failed <= terminated,
            "{mode}: {failed} appends failed on {terminated} dead connections"
        );
        assert!(
            stored_in_a_row >= 3,
            "{mode}: appends did not recover ({stored_in_a_row} stored in a row at the end)"
        );
        store.close().await;
    }
}

/// A fresh stream's first append, not started.
fn append_of(store: &PgEventStore, stream: &StreamId) -> Append {
    let (store, stream) = (store.clone(), stream.clone());
    Box::pin(async move { store.append(&stream, 0, numbered_events(0, 1)).await })
}

/// A batch queued behind an append whose session is terminated while it waits on the server:
/// the lone append is told it was not stored, and the batch, sent next (on the connection the
/// lone append leaves behind, unless that one is closed), is stored or not stored as a whole,
/// never indeterminate. Then appends succeed again.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_after_its_connections_backend_was_terminated_is_never_indeterminate() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let admin = admin_pool(&db).await;
    let config = db.config().group_commit_settings(GroupCommit {
        max_batches_in_flight: Some(1),
        ..GroupCommit::default()
    });
    let store = PgEventStore::connect(&config).await.unwrap();
    store
        .append(&fresh_stream("warm"), 0, numbered_events(0, 1))
        .await
        .unwrap();

    // The lone append stalls on the lock; the others queue behind it as one batch.
    let mut hold = admin.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let before = store.group_commit_stats();
    let lone_stream = fresh_stream("lone");
    let lone = tokio::spawn(append_of(&store, &lone_stream));
    until_stats(&store, "the lone append was never sent", |s| {
        s.batches == before.batches + 1
    })
    .await;
    let streams: Vec<StreamId> = (0..4).map(|_| fresh_stream("queued")).collect();
    let mut waiting = Vec::new();
    for stream in &streams {
        waiting.push(queue(append_of(&store, stream)).await);
    }

    let terminated = terminate_store_backends(&admin, &config).await;
    assert!(terminated >= 1, "the store had no session to end");
    let lone = lone.await.unwrap();
    hold.commit().await.unwrap();
    assert!(
        !check_honest(&admin, "the lone append", &lone_stream, &lone).await,
        "the lone append's session was terminated while it waited"
    );
    for (stream, queued) in streams.iter().zip(waiting) {
        let outcome = match queued {
            Queued::Answered(outcome) => outcome,
            Queued::Waiting(append) => append.await,
        };
        check_honest(&admin, "a queued append", stream, &outcome).await;
    }
    let after = store.group_commit_stats();
    assert_eq!(after.appends, before.appends + 1 + streams.len() as u64);
    assert!(
        after.largest_batch >= streams.len() as u64,
        "the queued appends left as one batch: {after:?}"
    );

    let mut stored_in_a_row = 0;
    for attempt in 1..=terminated + 3 {
        let stream = fresh_stream("after_kill");
        let outcome = store.append(&stream, 0, numbered_events(0, 1)).await;
        let what = format!("append {attempt} after the batch");
        if check_honest(&admin, &what, &stream, &outcome).await {
            stored_in_a_row += 1;
        } else {
            stored_in_a_row = 0;
        }
    }
    assert!(stored_in_a_row >= 3, "appends did not recover");
    store.close().await;
}
