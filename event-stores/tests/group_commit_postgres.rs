//! Group commit on PostgreSQL: appends that arrive while a batch is in flight are sent together,
//! in one statement and one transaction (checked in the table with raw SQL), and each keeps its
//! own outcome.
//!
//! Every test makes the batch happen rather than hoping for it: a transaction holds a `SHARE`
//! lock on `events`, so a first, lone append stalls on the server; with one batch in flight
//! allowed, the appends sent meanwhile all wait in the queue and leave as one batch once the
//! lock is released. No step waits a fixed time for another: the lone append is known to be in
//! flight from the counts, and each append sent meanwhile is queued by its first poll (see
//! [`queue`]), in the order sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Append, queue, set_shard_owner, until_stats};
use std::time::Duration;

use event_stores::contract::{fresh_stream, numbered_events};
use event_stores::testing::{TestDatabase, fresh_database};
use event_stores::{
    AppendReceipt, EventStore, Fence, GroupCommit, GroupCommitStats, InvalidInput, NewEvent,
    PgEventStore, SnapshotStore, StoreError, StoreResult, StreamId,
};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// A store that keeps at most one batch in flight.
async fn one_batch_at_a_time(db: &TestDatabase) -> PgEventStore {
    PgEventStore::connect(&db.config().group_commit_settings(GroupCommit {
        max_batches_in_flight: Some(1),
        ..GroupCommit::default()
    }))
    .await
    .unwrap()
}

/// Holds every insert into `events` until the transaction ends.
async fn hold_inserts(pool: &PgPool) -> Transaction<'static, Postgres> {
    let mut hold = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    hold
}

type Outcome = JoinHandle<StoreResult<AppendReceipt>>;

fn spawn_append(
    store: &PgEventStore,
    stream: &StreamId,
    expected: u64,
    events: Vec<NewEvent>,
    fence: Option<Fence>,
) -> Outcome {
    let (store, stream) = (store.clone(), stream.clone());
    tokio::spawn(async move {
        match fence {
            Some(fence) => store.append_fenced(&stream, expected, events, &fence).await,
            None => store.append(&stream, expected, events).await,
        }
    })
}

type Planned = (StreamId, u64, Vec<NewEvent>, Option<Fence>);

/// The append `planned`, not started.
fn append_of(store: &PgEventStore, (stream, expected, events, fence): Planned) -> Append {
    let store = store.clone();
    Box::pin(async move {
        match fence {
            Some(fence) => store.append_fenced(&stream, expected, events, &fence).await,
            None => store.append(&stream, expected, events).await,
        }
    })
}

/// Starts a lone append of a fresh stream while `events` is locked, and returns it once it is
/// the batch in flight: counted as a batch (which happens once it has its connection, just
/// before it is sent, and it cannot finish before the lock is released).
async fn lone_append_in_flight(store: &PgEventStore, before: &GroupCommitStats) -> Outcome {
    let lone = spawn_append(store, &fresh_stream("lone"), 0, numbered_events(0, 1), None);
    until_stats(store, "the lone append was never sent", |s| {
        s.batches == before.batches + 1
    })
    .await;
    assert!(!lone.is_finished(), "the lone append waits for the lock");
    lone
}

/// Stalls a lone append on held inserts, sends `appends` while it is stuck, releases the lock
/// and returns their outcomes. Checks that they left as exactly one batch after the lone one.
async fn send_as_one_batch(
    store: &PgEventStore,
    appends: Vec<Planned>,
) -> Vec<StoreResult<AppendReceipt>> {
    let count = appends.len() as u64;
    send_while_stuck(store, appends, &[count]).await
}

/// Stalls a lone append on held inserts, queues `appends` (in order) while it is stuck,
/// releases the lock and returns their outcomes. Checks that the appends queued meanwhile
/// left, after the lone one, as batches of `batches` appends (in that order; the appends
/// refused before they are queued are in none).
async fn send_while_stuck(
    store: &PgEventStore,
    appends: Vec<Planned>,
    batches: &[u64],
) -> Vec<StoreResult<AppendReceipt>> {
    let hold = hold_inserts(store.pool()).await;
    let before = store.group_commit_stats();
    let lone = lone_append_in_flight(store, &before).await;
    let mut waiting = Vec::new();
    for planned in appends {
        waiting.push(queue(append_of(store, planned)).await);
    }
    assert_eq!(
        store.group_commit_stats().batches,
        before.batches + 1,
        "only the lone append was sent while its batch was stuck"
    );
    hold.commit().await.unwrap();
    lone.await.unwrap().unwrap();
    let queued: u64 = batches.iter().sum();
    until_stats(
        store,
        "the appends were not all queued by their first poll (nobody polled them since)",
        |s| s.appends == before.appends + 1 + queued,
    )
    .await;
    let mut outcomes = Vec::new();
    for append in waiting {
        outcomes.push(append.outcome().await);
    }
    let after = store.group_commit_stats();
    assert_eq!(
        after.batches,
        before.batches + 1 + batches.len() as u64,
        "the appends queued while the lone one was stuck left as {batches:?}"
    );
    assert_eq!(after.appends, before.appends + 1 + queued);
    let largest = batches.iter().copied().max().unwrap_or(0);
    assert_eq!(after.largest_batch, before.largest_batch.max(largest));
    outcomes
}

/// How many transactions wrote the events of `streams` at `version`, and how many events.
async fn writers_at(pool: &PgPool, streams: &[StreamId], version: i64) -> (i64, i64) {
    let ids: Vec<&str> = streams.iter().map(|s| s.aggregate_id()).collect();
    sqlx::query_as(
        "SELECT COUNT(DISTINCT xmin::text), COUNT(*) FROM events
         WHERE aggregate_id = ANY($1) AND version = $2",
    )
    .bind(&ids)
    .bind(version)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Twenty appends sent while a batch is stuck leave together: the stored ones were written by
/// one transaction (raw SQL on `xmin`), while a stale expected version, an expected version
/// ahead and a fence from a past epoch each get their own refusal and store nothing.
/// The test server runs without `fsync` (its commits wait for no flush): by default two batches
/// may be in flight there; a store made from a pool reads no settings and keeps to one.
#[tokio::test(flavor = "multi_thread")]
async fn by_default_two_batches_fly_on_a_server_whose_commits_wait_for_no_flush() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let store = PgEventStore::connect(&db.config()).await.unwrap();
    let durability = store.server_durability().unwrap();
    assert!(!durability.commits_wait_for_flush(), "{durability}");
    assert_eq!(store.group_commit().max_batches_in_flight, Some(2));
    let from_pool = PgEventStore::with_migrated_pool(store.pool().clone(), Default::default());
    assert_eq!(from_pool.group_commit().max_batches_in_flight, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_sent_together_commit_in_one_transaction_and_each_keeps_its_own_outcome() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let store = one_batch_at_a_time(&db).await;
    let owner = Uuid::now_v7();
    set_shard_owner(store.pool(), 9, owner, 3).await;
    let current = Fence {
        shard: 9,
        owner,
        epoch: 3,
    };
    let past = Fence {
        epoch: 2,
        ..current
    };
    let streams: Vec<StreamId> = (0..20).map(|_| fresh_stream("together")).collect();
    for stream in &streams {
        store
            .append(stream, 0, numbered_events(0, 1))
            .await
            .unwrap();
    }

    let plan = |i: usize| match i {
        3 => (0, None),        // behind
        7 => (4, None),        // ahead
        11 => (1, Some(past)), // fenced out
        12 | 13 => (1, Some(current)),
        _ => (1, None),
    };
    let appends = streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (expected, fence) = plan(i);
            (
                s.clone(),
                expected,
                numbered_events(1, 1 + i as u64 % 3),
                fence,
            )
        })
        .collect();
    let outcomes = send_as_one_batch(&store, appends).await;

    let mut stored = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (
                3 | 7,
                Err(StoreError::VersionConflict {
                    expected, actual, ..
                }),
            ) => {
                assert_eq!((expected, actual), (plan(i).0, 1), "append {i}");
            }
            (11, Err(StoreError::Fenced { shard, epoch, .. })) => {
                assert_eq!((shard, epoch), (9, 2));
            }
            (3 | 7 | 11, other) => panic!("append {i} must be refused, got {other:?}"),
            (_, Ok(receipt)) => {
                assert_eq!(receipt.first_version, 2, "append {i}");
                assert_eq!(receipt.last_version, 2 + i as u64 % 3, "append {i}");
                stored.push(streams[i].clone());
            }
            (_, Err(error)) => panic!("append {i} must be stored, got {error:?}"),
        }
    }
    assert_eq!(stored.len(), 17);
    assert_eq!(
        writers_at(store.pool(), &stored, 2).await,
        (1, 17),
        "the batch's first events were written by one transaction"
    );
    for i in [3, 7, 11] {
        assert_eq!(store.stream_version(&streams[i]).await.unwrap(), 1);
    }
    assert_eq!(store.group_commit_stats().reruns, 0);
}

/// A retried command in a batch makes the statement fail on the unique event id: the batch is
/// re-run one append at a time, the retry is refused as already applied, and every other append
/// is stored once (each by its own transaction now).
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_refused_by_a_unique_violation_is_rerun_one_append_at_a_time() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let store = one_batch_at_a_time(&db).await;
    let retried = fresh_stream("retried");
    let command = Uuid::now_v7();
    let first = vec![
        numbered_events(0, 1)
            .remove(0)
            .for_command(&retried, command, 0),
    ];
    store.append(&retried, 0, first.clone()).await.unwrap();
    let others: Vec<StreamId> = (0..10).map(|_| fresh_stream("beside")).collect();

    let mut appends = vec![(retried.clone(), 1, first, None)];
    appends.extend(
        others
            .iter()
            .map(|s| (s.clone(), 0, numbered_events(0, 2), None)),
    );
    let outcomes = send_as_one_batch(&store, appends).await;

    assert!(
        matches!(&outcomes[0], Err(StoreError::CommandAlreadyApplied { command_id, .. }) if *command_id == command),
        "{:?}",
        outcomes[0]
    );
    for outcome in &outcomes[1..] {
        assert_eq!(outcome.as_ref().unwrap().last_version, 2);
    }
    assert_eq!(store.group_commit_stats().reruns, 1);
    assert_eq!(
        writers_at(store.pool(), &others, 1).await,
        (10, 10),
        "re-run one by one: one transaction per append"
    );
    assert_eq!(store.stream_version(&retried).await.unwrap(), 1);
}

/// A batch that reaches a shard's ownership row while a takeover of it is in progress waits for
/// the takeover, then refuses the appends fenced by the old epoch and stores the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_racing_a_takeover_waits_for_it_and_refuses_only_the_fenced_appends() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let store = one_batch_at_a_time(&db).await;
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    set_shard_owner(store.pool(), 5, old, 1).await;
    set_shard_owner(store.pool(), 6, old, 1).await;
    let fence = |shard| Fence {
        shard,
        owner: old,
        epoch: 1,
    };
    let streams: Vec<StreamId> = (0..6).map(|_| fresh_stream("takeover")).collect();

    let mut takeover = store.pool().begin().await.unwrap();
    sqlx::query("UPDATE shard_owners SET owner = $1, epoch = epoch + 1 WHERE shard = 5")
        .bind(new)
        .execute(&mut *takeover)
        .await
        .unwrap();
    let appends = streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let fence = match i % 3 {
                0 => Some(fence(5)),
                1 => Some(fence(6)),
                _ => None,
            };
            (s.clone(), 0, numbered_events(0, 1), fence)
        })
        .collect::<Vec<_>>();
    let releasing = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        takeover.commit().await.unwrap();
    });
    let outcomes = send_as_one_batch(&store, appends).await;
    releasing.await.unwrap();

    for (i, outcome) in outcomes.iter().enumerate() {
        if i % 3 == 0 {
            assert!(
                matches!(
                    outcome,
                    Err(StoreError::Fenced {
                        shard: 5,
                        epoch: 1,
                        ..
                    })
                ),
                "append {i}: {outcome:?}"
            );
            assert_eq!(store.stream_version(&streams[i]).await.unwrap(), 0);
        } else {
            assert_eq!(outcome.as_ref().unwrap().last_version, 1, "append {i}");
        }
    }
}

/// Activation reads sent while others are stuck leave together: twenty streams, half with
/// snapshots, read at once get, each, exactly its newest snapshot and the events from that
/// snapshot's version (from version 1 without one), as separate reads of both stores say.
#[tokio::test(flavor = "multi_thread")]
async fn activation_reads_sent_together_share_a_statement_and_each_gets_its_own_start() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (store, snapshots) = db
        .stores(event_stores::StoreLimits::default())
        .await
        .unwrap();
    let streams: Vec<StreamId> = (0..20).map(|_| fresh_stream("start")).collect();
    for (i, stream) in streams.iter().enumerate() {
        store
            .append(stream, 0, numbered_events(0, 3 + i as u64))
            .await
            .unwrap();
        if i % 2 == 0 {
            for version in [1, 2 + i as u64 / 2] {
                let record = event_stores::contract::snapshot(
                    stream,
                    version,
                    event_stores::contract::now_micros(),
                );
                snapshots.save(record).await.unwrap();
            }
        }
    }
    let page = 4;

    // Reads wait while the snapshots table is locked; the first two (one per runner) go alone.
    let mut hold = store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let reads: Vec<_> = streams
        .iter()
        .map(|stream| {
            let (store, snapshots, stream) = (store.clone(), snapshots.clone(), stream.clone());
            tokio::spawn(async move { store.read_start(&stream, &snapshots, page).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    hold.commit().await.unwrap();

    for (stream, read) in streams.iter().zip(reads) {
        let start = read
            .await
            .unwrap()
            .unwrap()
            .expect("snapshots share the database");
        let snapshot = snapshots.load_latest(stream).await.unwrap();
        let from = snapshot.as_ref().map_or(1, |s| s.version);
        let events = store
            .read_stream(
                stream,
                event_stores::ReadQuery::after(from - 1).page_size(page),
            )
            .await
            .unwrap();
        assert_eq!(start.snapshot, snapshot, "{stream}");
        assert_eq!(start.events, events, "{stream}");
    }
    let stats = store.activation_read_stats();
    assert_eq!(stats.calls, 20);
    assert!(
        stats.batches <= 4 && stats.largest_batch >= 9,
        "the reads queued behind the lock left in few batches: {stats:?}"
    );
}

/// Runs `calls` while the snapshots table is locked, so that all but the first (which waits
/// for the lock alone) leave in one batch, and returns their outcomes.
async fn behind_a_snapshots_lock<T: Send + 'static>(
    pool: &PgPool,
    calls: Vec<JoinHandleFn<T>>,
) -> Vec<T> {
    let mut hold = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let running: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    hold.commit().await.unwrap();
    let mut outcomes = Vec::new();
    for call in running {
        outcomes.push(call.await.unwrap());
    }
    outcomes
}

type JoinHandleFn<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Snapshot saves, then retention passes, of twenty streams at once leave in a few statements;
/// every stream ends with exactly its own newest `keep` snapshots, each as saved.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_saves_and_retention_of_many_streams_share_statements_and_stay_per_stream() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (_, snapshots) = db
        .stores(event_stores::StoreLimits::default())
        .await
        .unwrap();
    let streams: Vec<StreamId> = (0..20).map(|_| fresh_stream("snap")).collect();
    let now = event_stores::contract::now_micros();
    for stream in &streams {
        for version in 1..=4 {
            let record = event_stores::contract::snapshot(stream, version, now);
            snapshots.save(record).await.unwrap();
        }
    }
    let (saves_before, _) = snapshots.write_batch_stats();

    let newest: Vec<_> = streams
        .iter()
        .map(|s| event_stores::contract::snapshot(s, 5, now))
        .collect();
    let saves = newest
        .iter()
        .map(|record| {
            let (snapshots, record) = (snapshots.clone(), record.clone());
            Box::pin(async move { snapshots.save(record).await }) as JoinHandleFn<_>
        })
        .collect();
    for outcome in behind_a_snapshots_lock::<StoreResult<()>>(snapshots.pool(), saves).await {
        outcome.unwrap();
    }
    let (saves_after, _) = snapshots.write_batch_stats();
    assert_eq!(saves_after.calls - saves_before.calls, 20);
    assert!(
        saves_after.batches - saves_before.batches <= 3 && saves_after.largest_batch >= 10,
        "{saves_before:?} → {saves_after:?}"
    );

    let passes = streams
        .iter()
        .enumerate()
        .map(|(i, stream)| {
            let (snapshots, stream) = (snapshots.clone(), stream.clone());
            Box::pin(async move { snapshots.retain_newest(&stream, 1 + i % 3).await })
                as JoinHandleFn<_>
        })
        .collect();
    let deleted = behind_a_snapshots_lock::<StoreResult<u64>>(snapshots.pool(), passes).await;
    let (_, retention) = snapshots.write_batch_stats();
    assert!(
        retention.batches <= 3 && retention.largest_batch >= 10,
        "{retention:?}"
    );
    for (i, (stream, deleted)) in streams.iter().zip(deleted).enumerate() {
        let keep = 1 + i as u64 % 3;
        assert_eq!(deleted.unwrap(), 5 - keep, "{stream}");
        let kept = snapshots.list(stream, 0, u64::MAX).await.unwrap();
        let versions: Vec<u64> = kept.iter().map(|r| r.version).collect();
        assert_eq!(
            versions,
            (6 - keep..=5).rev().collect::<Vec<_>>(),
            "{stream}"
        );
        assert_eq!(kept[0], newest[i], "{stream}: the newest as saved");
    }
}

/// An event type with a NUL byte (which PostgreSQL text refuses, SQLSTATE 22021) is refused
/// with its own typed error before it is queued: the nineteen appends sent with it, to fresh
/// streams, leave as one batch and all commit, in one transaction.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_type_with_a_nul_byte_is_refused_alone_and_its_batch_mates_commit() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let store = one_batch_at_a_time(&db).await;
    let streams: Vec<StreamId> = (0..20).map(|_| fresh_stream("nul")).collect();
    let bad = 9;
    let appends = streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut events = numbered_events(0, 1 + i as u64 % 3);
            if i == bad {
                events[0].event_type = "T\0".into();
            }
            (s.clone(), 0, events, None)
        })
        .collect();
    let outcomes = send_while_stuck(&store, appends, &[19]).await;

    let mut stored = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (9, Err(StoreError::InvalidInput(input))) => assert_eq!(
                input,
                InvalidInput::NameHasControlCharacters { what: "event type" }
            ),
            (9, other) => panic!("the NUL event type must be refused, got {other:?}"),
            (_, Ok(receipt)) => {
                assert_eq!(receipt.last_version, 1 + i as u64 % 3, "append {i}");
                stored.push(streams[i].clone());
            }
            (_, Err(error)) => panic!("append {i} must be stored, got {error:?}"),
        }
    }
    assert_eq!(writers_at(store.pool(), &stored, 1).await, (1, 19));
    assert_eq!(store.stream_version(&streams[bad]).await.unwrap(), 0);
    assert_eq!(store.group_commit_stats().reruns, 0);
}

/// A fence whose shard or epoch no column holds (shard above `i32::MAX`, epoch above
/// `i64::MAX`) is refused with its own typed error before it is queued: the appends sent with
/// it, fenced and not, leave as one batch and all commit.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_with_an_unrepresentable_fence_is_refused_alone_and_its_batch_mates_commit() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let store = one_batch_at_a_time(&db).await;
    let owner = Uuid::now_v7();
    set_shard_owner(store.pool(), 4, owner, 2).await;
    let good = Fence {
        shard: 4,
        owner,
        epoch: 2,
    };
    let huge_shard = Fence {
        shard: i32::MAX as u32 + 1,
        ..good
    };
    let huge_epoch = Fence {
        epoch: i64::MAX as u64 + 1,
        ..good
    };
    let streams: Vec<StreamId> = (0..12).map(|_| fresh_stream("fence-range")).collect();
    let fence = |i: usize| match i {
        3 => Some(huge_shard),
        8 => Some(huge_epoch),
        _ if i.is_multiple_of(2) => Some(good),
        _ => None,
    };
    let appends = streams
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), 0, numbered_events(0, 2), fence(i)))
        .collect();
    let outcomes = send_while_stuck(&store, appends, &[10]).await;

    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (3 | 8, Err(StoreError::InvalidInput(InvalidInput::BadVersion(message)))) => {
                let what = if i == 3 { "shard" } else { "epoch" };
                assert!(message.starts_with(what), "append {i}: {message}");
                assert_eq!(store.stream_version(&streams[i]).await.unwrap(), 0);
            }
            (3 | 8, other) => panic!("append {i} must be refused as invalid, got {other:?}"),
            (_, outcome) => assert_eq!(outcome.unwrap().last_version, 2, "append {i}"),
        }
    }
}

/// Batches are bounded in bytes as well as in appends and events: with room for three appends
/// of 1 000-byte events, nine such appends queued together leave as three batches of three,
/// and an append larger than the bound, queued after them, goes alone. Each is stored.
#[tokio::test(flavor = "multi_thread")]
async fn batches_are_split_by_bytes_and_an_append_above_the_bound_goes_alone() {
    let Some(db) = fresh_database().await else {
        return;
    };
    assert_eq!(GroupCommit::default().max_batch_bytes, 64 << 20);
    let event = |size: usize| NewEvent::new("T", 1, vec![7u8; size]);
    // An event of 1 000 payload bytes counts about 1 161 bytes: three fit in 4 000, four not.
    let store = PgEventStore::connect(&db.config().group_commit_settings(GroupCommit {
        max_batches_in_flight: Some(1),
        max_batch_bytes: 4_000,
        ..GroupCommit::default()
    }))
    .await
    .unwrap();
    assert_eq!(store.group_commit().max_batch_bytes, 4_000);
    let small: Vec<StreamId> = (0..9).map(|_| fresh_stream("bytes")).collect();
    let large = fresh_stream("bytes-large");

    let hold = hold_inserts(store.pool()).await;
    let before = store.group_commit_stats();
    let lone = lone_append_in_flight(&store, &before).await;
    let mut waiting = Vec::new();
    for s in &small {
        waiting.push(queue(append_of(&store, (s.clone(), 0, vec![event(1_000)], None))).await);
    }
    // Queued after the nine.
    let planned = (large.clone(), 0, vec![event(5_000)], None);
    waiting.push(queue(append_of(&store, planned)).await);
    assert_eq!(store.group_commit_stats().batches, before.batches + 1);
    hold.commit().await.unwrap();
    lone.await.unwrap().unwrap();
    until_stats(
        &store,
        "the appends were not all queued by their first poll (nobody polled them since)",
        |s| s.appends == before.appends + 1 + 9 + 1,
    )
    .await;
    for (i, append) in waiting.into_iter().enumerate() {
        assert_eq!(
            append.outcome().await.unwrap().last_version,
            1,
            "append {i}"
        );
    }

    let after = store.group_commit_stats();
    assert_eq!(after.batches, before.batches + 1 + 3 + 1, "{after:?}");
    assert_eq!(after.appends, before.appends + 1 + 9 + 1);
    assert_eq!(after.largest_batch, 3);
    let mut all = small.clone();
    all.push(large);
    assert_eq!(
        writers_at(store.pool(), &all, 1).await,
        (4, 10),
        "three transactions of three small appends and one of the large one"
    );
}
