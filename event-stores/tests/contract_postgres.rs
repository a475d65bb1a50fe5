//! The store contract, run against the PostgreSQL backends (each case on a fresh database of the
//! `DATABASE_URL` server), and the properties only a networked, durable store has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::set_shard_owner;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_stores::contract::{self, Fixture, fresh_stream, numbered_events, snapshot};
use event_stores::postgres::{PG_MAX_EVENTS_PER_APPEND, migrate};
use event_stores::testing::{fresh_database, fresh_database_with};
use event_stores::{
    EventStore, InvalidInput, PgConfig, PgEventStore, PgSnapshotStore, ReadQuery, SnapshotStore,
    StoreError, StoreLimits,
};

// With group commit on (the default): concurrent appends share statements.
event_stores::store_contract! {
    make = async {
        let db = fresh_database().await?;
        let limits = contract::limits();
        let (events, snapshots) = db.stores(limits).await.unwrap();
        assert!(events.group_commit().enabled);
        Some(Fixture::new(events, snapshots, limits).keep_alive(db))
    }
}

/// The same contract with group commit off: every append, activation read, snapshot save and
/// retention pass is its own statement.
mod one_statement_per_append {
    use super::*;

    event_stores::store_contract! {
        make = async {
            let db = fresh_database().await?;
            let limits = contract::limits();
            let events = PgEventStore::connect(&db.config().limits(limits).group_commit(false))
                .await
                .unwrap();
            assert!(!events.group_commit().enabled);
            let snapshots = PgSnapshotStore::with_migrated_pool(events.pool().clone(), limits)
                .with_group_commit(events.group_commit());
            Some(Fixture::new(events, snapshots, limits).keep_alive(db))
        }
    }
}

/// Dropping every connection and connecting anew (as after a process restart) reads back every
/// event and snapshot written before, and the stream continues at its version.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_store_reads_back_everything_written() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let stream = fresh_stream("restart");
    let (written, record) = {
        let (events, snapshots) = db.stores(StoreLimits::default()).await.unwrap();
        for v in (0..30).step_by(10) {
            events
                .append(&stream, v, numbered_events(v, 10))
                .await
                .unwrap();
        }
        let record = snapshot(&stream, 30, contract::now_micros());
        snapshots.save(record.clone()).await.unwrap();
        let written = events.read_stream(&stream, ReadQuery::all()).await.unwrap();
        events.close().await;
        (written, record)
    };

    let config = db.config();
    let events = PgEventStore::connect(&config).await.unwrap();
    let snapshots = PgSnapshotStore::connect(&config).await.unwrap();
    assert_eq!(events.stream_version(&stream).await.unwrap(), 30);
    assert_eq!(
        events.read_stream(&stream, ReadQuery::all()).await.unwrap(),
        written
    );
    assert_eq!(snapshots.load_latest(&stream).await.unwrap(), Some(record));
    let streams = [stream.clone()].into();
    let all = contract::read_all_of(&events, &streams, 1000, written.len()).await;
    assert_eq!(all, written);
    let receipt = events
        .append(&stream, 30, numbered_events(30, 1))
        .await
        .unwrap();
    assert_eq!(receipt.last_version, 31);
    assert!(receipt.last_position > written[29].position);
}

/// Connecting to a port nobody listens on fails with the retryable `Unavailable` error, within
/// the configured acquire timeout rather than hanging.
#[tokio::test(flavor = "multi_thread")]
async fn connecting_to_a_closed_port_is_unavailable_quickly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = PgConfig::new(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .acquire_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = PgEventStore::connect(&config).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "expected Unavailable, got {err:?}"
    );
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let err = PgSnapshotStore::connect(&config).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

/// A server that goes away under a connected store turns into `Unavailable`, not a panic or a
/// generic backend error.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pool_is_unavailable() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, snapshots) = db.stores(StoreLimits::default()).await.unwrap();
    events.close().await;
    let stream = fresh_stream("closed");
    let err = events
        .append(&stream, 0, numbered_events(0, 1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = snapshots.load_latest(&stream).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

/// An event id already stored by another append is refused with a typed error naming it, and
/// nothing of the batch is stored (the unique key on event ids is the last line of defence).
#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_stored_before_is_refused_and_nothing_is_stored() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let first = fresh_stream("reuse");
    let second = fresh_stream("reuse");
    let batch = numbered_events(0, 3);
    events.append(&first, 0, batch.clone()).await.unwrap();

    let mut reused = numbered_events(0, 3);
    reused[2].event_id = batch[1].event_id;
    let err = events.append(&second, 0, reused).await.unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidInput(InvalidInput::DuplicateEventId(id)) if id == batch[1].event_id),
        "{err:?}"
    );
    assert_eq!(events.stream_version(&second).await.unwrap(), 0);
    assert_eq!(events.stream_version(&first).await.unwrap(), 3);
}

/// Several stores migrating one fresh database at the same moment all succeed (sqlx serialises
/// them with an advisory lock), and migrating again is a no-op.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_migrations_of_one_database_all_succeed() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let config = db.config().max_connections(2);
    let connects: Vec<_> = (0..6)
        .map(|i| {
            let config = config.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    PgEventStore::connect(&config)
                        .await
                        .map(|s| s.pool().clone())
                } else {
                    PgSnapshotStore::connect(&config)
                        .await
                        .map(|s| s.pool().clone())
                }
            })
        })
        .collect();
    let mut pools = Vec::new();
    for c in connects {
        pools.push(c.await.unwrap().unwrap());
    }
    migrate(&pools[0]).await.unwrap();
    let store = PgEventStore::from_pool(pools[1].clone(), StoreLimits::default())
        .await
        .unwrap();
    store
        .append(&fresh_stream("migrated"), 0, numbered_events(0, 1))
        .await
        .unwrap();
}

/// Events and snapshots can live in two databases, each store migrating its own.
#[tokio::test(flavor = "multi_thread")]
async fn events_and_snapshots_can_live_in_separate_databases() {
    let Some(events_db) = fresh_database().await else {
        return;
    };
    let Some(snapshots_db) = fresh_database().await else {
        return;
    };
    let events = PgEventStore::connect(&events_db.config()).await.unwrap();
    let snapshots = PgSnapshotStore::connect(&snapshots_db.config())
        .await
        .unwrap();
    let stream = fresh_stream("split");
    events
        .append(&stream, 0, numbered_events(0, 2))
        .await
        .unwrap();
    snapshots
        .save(snapshot(&stream, 2, contract::now_micros()))
        .await
        .unwrap();
    assert_eq!(
        snapshots
            .load_latest(&stream)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(events.stream_version(&stream).await.unwrap(), 2);
}

/// The per-append limit is capped where positions run out of room for the event index, however
/// it is configured.
#[tokio::test(flavor = "multi_thread")]
async fn the_append_limit_is_capped_at_what_positions_can_number() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let limits = StoreLimits {
        max_events_per_append: usize::MAX,
        ..StoreLimits::default()
    };
    let (events, _) = db.stores(limits).await.unwrap();
    assert_eq!(
        events.limits().max_events_per_append,
        PG_MAX_EVENTS_PER_APPEND
    );
    let store: Arc<dyn EventStore> = Arc::new(events);
    let err = store
        .append(
            &fresh_stream("cap"),
            0,
            numbered_events(0, PG_MAX_EVENTS_PER_APPEND as u64 + 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidInput(InvalidInput::TooManyEvents { max, .. }) if max == PG_MAX_EVENTS_PER_APPEND),
        "{err:?}"
    );
}

/// Every connection carries the configured `statement_timeout`, `lock_timeout` and server-side
/// TCP keepalive, so a stuck statement or a vanished client cannot hold a connection forever.
#[tokio::test(flavor = "multi_thread")]
async fn connections_carry_the_configured_timeouts_and_keepalive() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let config = db
        .config()
        .statement_timeout(Some(Duration::from_millis(1_500)))
        .lock_timeout(Some(Duration::from_millis(700)))
        .tcp_keepalive(Some(Duration::from_secs(4)));
    assert_eq!(config.client_timeout(), Duration::from_millis(3_500));
    let events = PgEventStore::connect(&config).await.unwrap();
    let setting = |name: &'static str| {
        let pool = events.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT current_setting($1)")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(setting("statement_timeout").await, "1500ms");
    assert_eq!(setting("lock_timeout").await, "700ms");
    assert_eq!(setting("tcp_keepalives_idle").await, "4");
    assert_eq!(setting("tcp_keepalives_count").await, "3");
    assert_eq!(setting("tcp_user_timeout").await, "16000");

    // A statement longer than statement_timeout fails on the server and stores nothing.
    let slow = sqlx::query("SELECT pg_sleep(3)")
        .execute(events.pool())
        .await
        .unwrap_err();
    assert_eq!(
        slow.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57014"),
        "query_canceled by statement_timeout: {slow}"
    );
}

/// On connect the store reads the server's durability settings; the throw-away test cluster
/// runs with fsync off, so it reports that acknowledged appends would not survive a server
/// crash, and `require_durability` refuses it with a typed error.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_would_lose_acknowledged_commits_is_reported_and_can_be_refused() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let events = PgEventStore::connect(&db.config()).await.unwrap();
    let durability = events.server_durability().unwrap().clone();
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(events.pool())
        .await
        .unwrap();
    assert_eq!(durability.fsync, fsync == "on");
    if durability.survives_server_crash() {
        assert_eq!(events.crash_safety(), event_stores::CrashSafety::Durable);
        PgEventStore::connect(&db.config().require_durability(true))
            .await
            .unwrap();
    } else {
        assert!(matches!(
            events.crash_safety(),
            event_stores::CrashSafety::NotDurable(_)
        ));
        let refused = PgEventStore::connect(&db.config().require_durability(true)).await;
        assert!(
            matches!(refused, Err(StoreError::NotDurable(_))),
            "{refused:?}"
        );
    }
}

/// A fenced append stores only while its fence is the shard's current (owner, epoch): after a
/// takeover the old owner's append is refused as fenced and stores nothing, whatever version it
/// expects, and the new owner appends.
#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_append_stores_only_while_its_owner_and_epoch_are_current() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let stream = fresh_stream("fenced");
    let old = event_stores::Fence {
        shard: 7,
        owner: a,
        epoch: 1,
    };
    let new = event_stores::Fence {
        shard: 7,
        owner: b,
        epoch: 2,
    };

    // No ownership row at all: fenced.
    let refused = events
        .append_fenced(&stream, 0, numbered_events(0, 1), &old)
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Fenced {
                shard: 7,
                epoch: 1,
                ..
            })
        ),
        "{refused:?}"
    );

    set_shard_owner(events.pool(), 7, a, 1).await;
    events
        .append_fenced(&stream, 0, numbered_events(0, 2), &old)
        .await
        .unwrap();
    set_shard_owner(events.pool(), 7, b, 2).await;
    for expected in [2, 0, 5] {
        let refused = events
            .append_fenced(&stream, expected, numbered_events(2, 1), &old)
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::Fenced {
                    shard: 7,
                    epoch: 1,
                    ..
                })
            ),
            "expected version {expected}: {refused:?}"
        );
    }
    assert_eq!(events.stream_version(&stream).await.unwrap(), 2);
    // The same owner at a newer epoch is another fence too.
    let stale_epoch = event_stores::Fence { epoch: 1, ..new };
    assert!(matches!(
        events
            .append_fenced(&stream, 2, numbered_events(2, 1), &stale_epoch)
            .await,
        Err(StoreError::Fenced { .. })
    ));
    let receipt = events
        .append_fenced(&stream, 2, numbered_events(2, 1), &new)
        .await
        .unwrap();
    assert_eq!(receipt.last_version, 3);
}

/// An append that arrives while a takeover of its shard is in progress waits for it, then sees
/// the new owner and is fenced: the takeover cannot slip between the check and the insert.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_racing_a_takeover_waits_for_it_and_is_fenced() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    set_shard_owner(events.pool(), 3, a, 5).await;
    let stream = fresh_stream("race");

    let mut takeover = events.pool().begin().await.unwrap();
    sqlx::query("UPDATE shard_owners SET owner = $1, epoch = epoch + 1 WHERE shard = 3")
        .bind(b)
        .execute(&mut *takeover)
        .await
        .unwrap();
    let appending = {
        let events = events.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let fence = event_stores::Fence {
                shard: 3,
                owner: a,
                epoch: 5,
            };
            events
                .append_fenced(&stream, 0, numbered_events(0, 1), &fence)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !appending.is_finished(),
        "the append must wait for the takeover's row lock"
    );
    takeover.commit().await.unwrap();
    let outcome = appending.await.unwrap();
    assert!(
        matches!(
            outcome,
            Err(StoreError::Fenced {
                shard: 3,
                epoch: 5,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(events.stream_version(&stream).await.unwrap(), 0);
}

/// While an append holding the fence is in flight, a takeover of the shard waits for it to
/// commit, so the new owner's activation sees those events.
#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_waits_for_a_fenced_append_in_flight() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let a = uuid::Uuid::now_v7();
    set_shard_owner(events.pool(), 4, a, 1).await;
    // What the append statement holds while it runs: the row, FOR SHARE, until commit.
    let mut in_flight = events.pool().begin().await.unwrap();
    sqlx::query("SELECT epoch FROM shard_owners WHERE shard = 4 AND owner = $1 FOR SHARE")
        .bind(a)
        .execute(&mut *in_flight)
        .await
        .unwrap();
    let pool = events.pool().clone();
    let takeover = tokio::spawn(async move {
        sqlx::query("UPDATE shard_owners SET owner = NULL, epoch = epoch + 1 WHERE shard = 4")
            .execute(&pool)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover must wait for the append in flight"
    );
    in_flight.commit().await.unwrap();
    takeover.await.unwrap().unwrap();
}

/// On a database whose text sorts as people read it (ICU, `en-US`: "a" before "B"), stream ids
/// still page in byte order, as the in-memory store pages them: the identifier columns compare
/// byte by byte whatever the database's default collation.
#[tokio::test(flavor = "multi_thread")]
async fn stream_ids_page_in_byte_order_on_a_database_that_sorts_text_linguistically() {
    let Some(db) = fresh_database_with("LOCALE_PROVIDER icu ICU_LOCALE 'en-US'").await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let linguistic: bool = sqlx::query_scalar("SELECT 'a' < 'B'")
        .fetch_one(events.pool())
        .await
        .unwrap();
    assert!(
        linguistic,
        "the database's default collation sorts linguistically"
    );
    contract::stream_ids_page_through_one_type_in_id_order(Arc::new(events)).await;
}
