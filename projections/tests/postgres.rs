//! PostgreSQL projections: a read model counted exactly once though its handler fails and a
//! second runner races it (audited with raw SQL), live wake-ups by LISTEN/NOTIFY, and
//! checkpoints in PostgreSQL for an at-least-once read model that lives elsewhere; a rebuild
//! racing a rival runner's open batch, and a checkpoint row deleted by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use event_stores::testing::{TestDatabase, fresh_database};
use event_stores::{
    EventStore, InMemoryEventStore, NewEvent, RecordedEvent, StoreLimits, StreamId,
};
use parking_lot::Mutex;
use projections::postgres::{Listening, PgCheckpoints, PgProjection};
use projections::{HandlerError, Projection, ProjectionHandle, Projector, ProjectorSettings};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(30);

/// Counts events per stream with a non-idempotent increment; fails every `fail_every`-th batch
/// after writing, so only the transaction keeps the count exact.
struct Totals {
    batches: AtomicU64,
    fail_every: u64,
}

#[async_trait]
impl PgProjection for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), HandlerError> {
        for event in events {
            sqlx::query(
                "INSERT INTO totals (stream, events) VALUES ($1, 1) \
                 ON CONFLICT (stream) DO UPDATE SET events = totals.events + 1",
            )
            .bind(event.stream.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let batch = self.batches.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_every > 0 && batch.is_multiple_of(self.fail_every) {
            return Err("failing after writing, on purpose".into());
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("TRUNCATE totals").execute(&mut *tx).await?;
        Ok(())
    }
}

async fn append_concurrently(
    store: Arc<dyn EventStore>,
    writers: u64,
    per_writer: u64,
    streams: u64,
) {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let stream =
                        StreamId::new("account", format!("w{w}-s{}", i % streams)).unwrap();
                    let version = store.stream_version(&stream).await.unwrap();
                    store
                        .append(
                            &stream,
                            version,
                            vec![NewEvent::new("Happened", 1, vec![0x90])],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn last_position(pool: &PgPool) -> u64 {
    let position: i64 = sqlx::query("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
    position as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_read_model_counts_every_event_exactly_once_despite_failures_and_a_rival_runner()
{
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    sqlx::query("CREATE TABLE totals (stream text PRIMARY KEY, events bigint NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let store: Arc<dyn EventStore> = Arc::new(events);
    let settings = ProjectorSettings::default()
        .batch_size(40)
        .poll_interval(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(20));
    let projector = Projector::with_settings(Arc::clone(&store), settings);
    let first = projector
        .run_pg(
            Totals {
                batches: AtomicU64::new(0),
                fail_every: 3,
            },
            pool.clone(),
        )
        .await
        .unwrap();
    // Both fail: after a lost race a runner pauses, so either may end up doing most batches.
    let rival = projector
        .run_pg(
            Totals {
                batches: AtomicU64::new(0),
                fail_every: 3,
            },
            pool.clone(),
        )
        .await
        .unwrap();

    append_concurrently(Arc::clone(&store), 4, 500, 4).await;
    let last = last_position(&pool).await;
    assert!(first.wait_for(last, WAIT).await, "{:?}", first.stats());
    assert!(rival.wait_for(last, WAIT).await, "{:?}", rival.stats());

    let stored: Vec<(String, i64)> = sqlx::query(
        "SELECT aggregate_type || '/' || aggregate_id, COUNT(*) FROM events GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    let counted: Vec<(String, i64)> = sqlx::query("SELECT stream, events FROM totals ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(stored.len(), 16);
    assert_eq!(counted, stored, "every event counted exactly once");
    let (a, b) = (first.stats(), rival.stats());
    assert!(
        a.retries + b.retries > 0,
        "the failing handlers' batches were rolled back and retried"
    );
    assert_eq!(
        a.events_handled + b.events_handled,
        2_000,
        "committed batches cover each event once between the two runners"
    );
    first.stop().await;
    rival.stop().await;
}

/// Counts what it is handed, in memory.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<u64>>>);

#[async_trait]
impl Projection for Seen {
    fn name(&self) -> &str {
        "seen"
    }

    async fn handle(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        self.0.lock().extend(events.iter().map(|e| e.position));
        Ok(())
    }

    async fn reset(&self) -> Result<(), HandlerError> {
        self.0.lock().clear();
        Ok(())
    }
}

/// A `Seen` projection running on a fresh database, woken by notifications only (its poll is
/// an hour away).
struct Listened {
    _db: TestDatabase,
    pool: PgPool,
    store: Arc<dyn EventStore>,
    _listening: Listening,
    seen: Seen,
    running: ProjectionHandle,
}

async fn listened() -> Option<Listened> {
    let db = fresh_database().await?;
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let store: Arc<dyn EventStore> = Arc::new(events);
    let projector = Projector::with_settings(
        Arc::clone(&store),
        ProjectorSettings::default().poll_interval(Duration::from_secs(3600)),
    );
    let listening = projector.listen(&pool).await.unwrap();
    let seen = Seen::default();
    let checkpoints = Arc::new(PgCheckpoints::new(pool.clone()).await.unwrap());
    let running = projector.run(seen.clone(), checkpoints);
    Some(Listened {
        _db: db,
        pool,
        store,
        _listening: listening,
        seen,
        running,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_wakes_a_caught_up_projection_without_polling() {
    let Some(Listened {
        _db,
        pool,
        store,
        _listening,
        seen,
        running,
    }) = listened().await
    else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut lags = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        append_concurrently(Arc::clone(&store), 1, 1, 1).await;
        let last = last_position(&pool).await;
        assert!(
            running.wait_for(last, WAIT).await,
            "seen without a poll (the next one is an hour away)"
        );
        lags.push(started.elapsed());
    }
    println!("live lag after an append (LISTEN/NOTIFY): {lags:?}");
    assert_eq!(seen.0.lock().len(), 5);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_event_hidden_behind_an_older_transaction_is_seen_once_it_ends() {
    let Some(Listened {
        _db,
        pool,
        store,
        _listening,
        seen,
        running,
    }) = listened().await
    else {
        return;
    };

    // An older transaction holds a transaction id: read_all may not show anything appended
    // after it began until it ends, though the append's notification arrives at once.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT txid_current()")
        .execute(&mut *blocker)
        .await
        .unwrap();
    append_concurrently(Arc::clone(&store), 1, 1, 1).await;
    let last = last_position(&pool).await;
    assert!(
        !running.wait_for(last, Duration::from_secs(1)).await,
        "hidden while the older transaction runs"
    );
    // Ten seconds in all: a back-off that doubled from the wake-up would look next at 16 s.
    tokio::time::sleep(Duration::from_secs(9)).await;
    blocker.commit().await.unwrap();
    // The horizon is cluster-wide: a transaction of another test may still hide the event for
    // a while. Time the runner from the moment read_all itself first shows the event.
    let visible = std::time::Instant::now();
    while store.read_all(0, 10).await.unwrap().is_empty() {
        assert!(
            visible.elapsed() < Duration::from_secs(45),
            "read_all shows the event once older transactions end"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shown = std::time::Instant::now();
    assert!(
        running.wait_for(last, Duration::from_secs(2)).await,
        "seen soon after read_all can show it, without a poll: {:?}",
        running.stats()
    );
    println!(
        "read_all showed the event {:?} after the older transaction ended; the runner saw it {:?} later",
        shown - visible,
        shown.elapsed()
    );
    assert_eq!(seen.0.lock().len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_in_postgres_let_a_new_runner_resume_where_the_last_one_stopped() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let store: Arc<dyn EventStore> = Arc::new(events);
    append_concurrently(Arc::clone(&store), 2, 50, 3).await;
    let first_last = last_position(&pool).await;
    let seen = Seen::default();
    let projector = Projector::new(Arc::clone(&store));
    let running = projector.run(
        seen.clone(),
        Arc::new(PgCheckpoints::new(pool.clone()).await.unwrap()),
    );
    assert!(running.wait_for(first_last, WAIT).await);
    running.stop().await;

    append_concurrently(Arc::clone(&store), 2, 10, 3).await;
    let projector = Projector::new(Arc::clone(&store));
    let running = projector.run(
        seen.clone(),
        Arc::new(PgCheckpoints::new(pool.clone()).await.unwrap()),
    );
    assert!(running.wait_for(last_position(&pool).await, WAIT).await);
    assert_eq!(running.stats().events_handled, 20, "only the new events");
    assert_eq!(seen.0.lock().len(), 120);
    running.stop().await;
}

/// Counts events per stream in `tally` with a non-idempotent increment and clears it with a
/// `DELETE` (which, unlike `TRUNCATE`, does not wait for rows other transactions are inserting).
/// With a `park`, it stops after writing its first batch with a `customer` event, its
/// transaction open, until released.
struct Tally {
    park: Option<Park>,
}

/// Where a [`Tally`] waits in its first batch with a `customer` event.
#[derive(Clone, Default)]
struct Park {
    parked: Arc<Notify>,
    release: Arc<Notify>,
    done: Arc<AtomicBool>,
}

#[async_trait]
impl PgProjection for Tally {
    fn name(&self) -> &str {
        "tally"
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), HandlerError> {
        for event in events {
            sqlx::query(
                "INSERT INTO tally (stream, events) VALUES ($1, 1) \
                 ON CONFLICT (stream) DO UPDATE SET events = tally.events + 1",
            )
            .bind(event.stream.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let customers = events
            .iter()
            .any(|e| e.stream.aggregate_type() == "customer");
        if let Some(park) = &self.park
            && customers
            && !park.done.swap(true, Ordering::SeqCst)
        {
            park.parked.notify_one();
            park.release.notified().await;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM tally").execute(&mut *tx).await?;
        Ok(())
    }
}

/// A fresh database with the `tally` table: its guard, pool and event store.
async fn tally_database() -> Option<(TestDatabase, PgPool, Arc<dyn EventStore>)> {
    let db = fresh_database().await?;
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    sqlx::query("CREATE TABLE tally (stream text PRIMARY KEY, events bigint NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    Some((db, pool, Arc::new(events)))
}

/// Appends `count` one-event commands round-robin over `streams` streams of `aggregate_type`;
/// returns the last position.
async fn append_round_robin(
    store: &dyn EventStore,
    aggregate_type: &str,
    streams: u64,
    count: u64,
) -> u64 {
    let mut last = 0;
    for i in 0..count {
        let stream = StreamId::new(aggregate_type, format!("s{}", i % streams)).unwrap();
        let version = store.stream_version(&stream).await.unwrap();
        let receipt = store
            .append(
                &stream,
                version,
                vec![NewEvent::new("Happened", 1, vec![0x90])],
            )
            .await
            .unwrap();
        last = receipt.last_position;
    }
    last
}

/// Events per stream in the store, and per stream in `tally`, both in stream order.
async fn stored_and_tallied(pool: &PgPool) -> (Vec<(String, i64)>, Vec<(String, i64)>) {
    let pairs = |rows: Vec<sqlx::postgres::PgRow>| {
        rows.iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect::<Vec<(String, i64)>>()
    };
    let stored = sqlx::query(
        "SELECT aggregate_type || '/' || aggregate_id, COUNT(*) FROM events GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let tallied = sqlx::query("SELECT stream, events FROM tally ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap();
    (pairs(stored), pairs(tallied))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_racing_a_rival_runners_open_batch_still_counts_every_event_exactly_once() {
    let Some((_db, pool, store)) = tally_database().await else {
        return;
    };
    // Runner B does the counting.
    let park = Park::default();
    let b_projector = Projector::with_settings(
        Arc::clone(&store),
        ProjectorSettings::default().poll_interval(Duration::from_millis(10)),
    );
    let b = b_projector
        .run_pg(
            Tally {
                park: Some(park.clone()),
            },
            pool.clone(),
        )
        .await
        .unwrap();
    // Runner A, in another process in effect, is only there to rebuild: its feed is empty, so
    // it never counts anything itself and the replay is B's.
    let a_projector = Projector::new(Arc::new(InMemoryEventStore::new()));
    let a = a_projector
        .run_pg(Tally { park: None }, pool.clone())
        .await
        .unwrap();

    let before = append_round_robin(&*store, "account", 3, 12).await;
    assert!(b.wait_for(before, WAIT).await, "{:?}", b.stats());
    // B inserts rows for new streams and parks with its transaction (and the checkpoint
    // row's lock) open.
    append_round_robin(&*store, "customer", 3, 9).await;
    tokio::time::timeout(WAIT, park.parked.notified())
        .await
        .expect("B parked in its batch");

    // A rebuilds meanwhile; B is released once A waits for a lock (B's).
    let release_once_a_waits = async {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "A never waited for B");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        park.release.notify_one();
    };
    let (rebuilt, ()) = tokio::join!(a.rebuild(), release_once_a_waits);
    rebuilt.unwrap();
    // B's next batch finds the checkpoint reset, and B replays from the first event.
    let last = append_round_robin(&*store, "account", 3, 1).await;
    assert!(b.wait_for(last, WAIT).await, "{:?}", b.stats());

    let (stored, tallied) = stored_and_tallied(&pool).await;
    assert_eq!(stored.len(), 6);
    assert_eq!(
        tallied, stored,
        "every event counted exactly once after the rebuild"
    );
    assert_eq!(a.stats().events_handled, 0, "A counted nothing itself");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_checkpoint_row_is_recreated_and_the_projection_replays_from_the_first_event() {
    let Some((_db, pool, store)) = tally_database().await else {
        return;
    };
    let projector = Projector::with_settings(
        Arc::clone(&store),
        ProjectorSettings::default().poll_interval(Duration::from_millis(10)),
    );
    let running = projector
        .run_pg(Tally { park: None }, pool.clone())
        .await
        .unwrap();
    let before = append_round_robin(&*store, "account", 2, 10).await;
    assert!(running.wait_for(before, WAIT).await);

    // An operator deletes the row to force a replay; the next events reveal it.
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = 'tally'")
        .execute(&pool)
        .await
        .unwrap();
    let last = append_round_robin(&*store, "customer", 2, 4).await;
    assert!(
        running.wait_for(last, WAIT).await,
        "made progress: {:?}",
        running.stats()
    );
    let stats = running.stats();
    assert_eq!(
        stats.events_handled,
        10 + 14,
        "replayed from the first event"
    );
    assert_eq!(
        stats.checkpoint_moves, 1,
        "found missing once, then recreated: no spinning"
    );
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = 'tally'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(checkpoint as u64, last, "the row is back");
    // The replay went into the read model as it was: the old streams counted twice.
    let (_, tallied) = stored_and_tallied(&pool).await;
    let total: i64 = tallied.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 2 * 10 + 4);
    running.stop().await;
}
