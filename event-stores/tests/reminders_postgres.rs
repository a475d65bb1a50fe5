//! Reminders in PostgreSQL beyond the backend contract: fencing, the rows as stored, what a lost
//! or silent connection before `COMMIT` means, and the plans of the scheduler's queries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use common::set_shard_owner;
use sqlx::Row;
use uuid::Uuid;

use event_stores::contract::{fresh_stream, now_micros, numbered_events, schedule};
use event_stores::testing::fresh_database;
use event_stores::{
    DueReminders, EventStore, Fence, PgEventStore, ReminderChange, ReminderState, StoreError,
    StoreLimits, StoredReminder, StreamId,
};

fn id_of(change: &ReminderChange) -> Uuid {
    match change {
        ReminderChange::Schedule { reminder_id, .. } => *reminder_id,
        other => panic!("not a schedule: {other:?}"),
    }
}

async fn names(store: &PgEventStore, stream: &StreamId) -> Vec<String> {
    store
        .reminders_of(stream)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// A fenced call stores only while its fence is the shard's current (owner, epoch), with events
/// or without: otherwise it is `Fenced` and stores neither events nor reminder changes, whatever
/// version it expects. A reminder scheduled under a fence records the fence's shard, and the
/// shard filter finds it there.
#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_call_stores_only_under_the_current_fence_and_records_its_shard() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let old = Fence {
        shard: 7,
        owner: a,
        epoch: 1,
    };
    let new = Fence {
        shard: 7,
        owner: b,
        epoch: 2,
    };
    let stream = fresh_stream("fenced-remind");
    let due = now_micros() - TimeDelta::days(365 * 300);
    let fenced = |r: StoreResult| {
        assert!(
            matches!(
                r,
                Err(StoreError::Fenced {
                    shard: 7,
                    epoch: 1,
                    ..
                })
            ),
            "{r:?}"
        );
    };
    type StoreResult = Result<event_stores::AppendReceipt, StoreError>;

    // No ownership row: fenced.
    fenced(
        events
            .append_with_reminders(
                &stream,
                0,
                numbered_events(0, 1),
                vec![schedule("r", due, None, b"r")],
                Some(&old),
            )
            .await,
    );
    set_shard_owner(events.pool(), 7, b, 2).await;
    for expected in [0, 1, 5] {
        for events_in_call in [0, 1, 3] {
            fenced(
                events
                    .append_with_reminders(
                        &stream,
                        expected,
                        numbered_events(0, events_in_call),
                        vec![schedule("r", due, None, b"r")],
                        Some(&old),
                    )
                    .await,
            );
        }
    }
    assert_eq!(events.stream_version(&stream).await.unwrap(), 0);
    assert!(events.reminders_of(&stream).await.unwrap().is_empty());

    let periodic = schedule("periodic", due, Some(1_000), b"p");
    let receipt = events
        .append_with_reminders(
            &stream,
            0,
            numbered_events(0, 2),
            vec![periodic.clone()],
            Some(&new),
        )
        .await
        .unwrap();
    assert_eq!(receipt.last_version, 2);
    let once = schedule("once", due, None, b"o");
    events
        .append_with_reminders(&stream, 2, Vec::new(), vec![once.clone()], Some(&new))
        .await
        .unwrap();
    let stored = events.reminders_of(&stream).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|r| r.shard == 7), "{stored:?}");
    // A stale fence cannot fire, replace or cancel them either.
    fenced(
        events
            .append_with_reminders(
                &stream,
                2,
                Vec::new(),
                vec![ReminderChange::Cancel {
                    name: "once".into(),
                }],
                Some(&old),
            )
            .await,
    );
    assert_eq!(events.reminders_of(&stream).await.unwrap(), stored);

    let due_in = |shards: Vec<u32>| {
        let events = events.clone();
        let stream = stream.clone();
        async move {
            events
                .due_reminders(&DueReminders {
                    shards: Some(shards),
                    due_by: due,
                    limit: 100,
                    skip: Vec::new(),
                })
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.stream == stream)
                .map(|r| r.name)
                .collect::<Vec<_>>()
        }
    };
    let mut found = due_in(vec![7]).await;
    found.sort();
    assert_eq!(found, ["once", "periodic"]);
    assert_eq!(due_in(vec![3, 7, 9]).await.len(), 2);
    assert!(due_in(vec![0]).await.is_empty());

    // Scheduled again without a fence: shard 0.
    events
        .append_with_reminders(
            &stream,
            2,
            Vec::new(),
            vec![schedule("once", due, None, b"o2")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(due_in(vec![0]).await, ["once"]);
}

/// A call that reaches the shard while a takeover of it is in progress waits for the takeover,
/// then sees the new owner and is fenced, storing nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_call_racing_a_takeover_waits_for_it_and_is_fenced() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    set_shard_owner(events.pool(), 3, a, 5).await;
    let fence = Fence {
        shard: 3,
        owner: a,
        epoch: 5,
    };
    for with_events in [0, 1, 2] {
        let stream = fresh_stream("takeover-remind");
        set_shard_owner(events.pool(), 3, a, 5).await;
        let mut takeover = events.pool().begin().await.unwrap();
        sqlx::query("UPDATE shard_owners SET owner = $1, epoch = epoch + 1 WHERE shard = 3")
            .bind(b)
            .execute(&mut *takeover)
            .await
            .unwrap();
        let call = {
            let (events, stream) = (events.clone(), stream.clone());
            tokio::spawn(async move {
                events
                    .append_with_reminders(
                        &stream,
                        0,
                        numbered_events(0, with_events),
                        vec![schedule("r", now_micros(), None, b"r")],
                        Some(&fence),
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!call.is_finished(), "the call waits for the takeover");
        takeover.commit().await.unwrap();
        let outcome = call.await.unwrap();
        assert!(
            matches!(outcome, Err(StoreError::Fenced { epoch: 5, .. })),
            "{outcome:?}"
        );
        assert_eq!(events.stream_version(&stream).await.unwrap(), 0);
        assert!(events.reminders_of(&stream).await.unwrap().is_empty());
    }
}

/// The row in `reminders` is what the API says, column by column, through schedule, a refused
/// firing and a periodic firing.
#[tokio::test(flavor = "multi_thread")]
async fn rows_in_the_reminders_table_are_what_the_api_says() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let stream = fresh_stream("raw-remind");
    let owner = Uuid::now_v7();
    set_shard_owner(events.pool(), 11, owner, 4).await;
    let fence = Fence {
        shard: 11,
        owner,
        epoch: 4,
    };
    // Nanoseconds are kept to the microsecond, as the API reads them back.
    let due: DateTime<Utc> = DateTime::parse_from_rfc3339("2031-02-03T04:05:06.123456789Z")
        .unwrap()
        .to_utc();
    let once = schedule("once", due, None, &[1, 2, 3]);
    let periodic = schedule("periodic", due, Some(86_400_000), b"");
    events
        .append_with_reminders(
            &stream,
            0,
            numbered_events(0, 1),
            vec![once.clone(), periodic.clone()],
            Some(&fence),
        )
        .await
        .unwrap();
    let fired_at = due + TimeDelta::seconds(2);
    events
        .append_with_reminders(
            &stream,
            1,
            Vec::new(),
            vec![
                ReminderChange::Fired {
                    name: "once".into(),
                    reminder_id: id_of(&once),
                    due_at: due,
                    fired_at,
                    next_due_at: None,
                    error: Some("closed: \"quoted\" ünïcode\nline".into()),
                },
                ReminderChange::Fired {
                    name: "periodic".into(),
                    reminder_id: id_of(&periodic),
                    due_at: due,
                    fired_at,
                    next_due_at: Some(due + TimeDelta::days(1)),
                    error: None,
                },
            ],
            Some(&fence),
        )
        .await
        .unwrap();

    let api = events.reminders_of(&stream).await.unwrap();
    let rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, name, reminder_id, shard, due_at, period_ms, \
                payload, state, last_error, last_fired_at \
         FROM reminders WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY name",
    )
    .bind(stream.aggregate_type())
    .bind(stream.aggregate_id())
    .fetch_all(events.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(api.len(), 2);
    for (row, reminder) in rows.iter().zip(&api) {
        assert_eq!(row.get::<String, _>(0), stream.aggregate_type());
        assert_eq!(row.get::<String, _>(1), stream.aggregate_id());
        assert_eq!(row.get::<String, _>(2), reminder.name);
        assert_eq!(row.get::<Uuid, _>(3), reminder.reminder_id);
        assert_eq!(row.get::<i32, _>(4), 11);
        assert_eq!(row.get::<DateTime<Utc>, _>(5), reminder.due_at);
        assert_eq!(
            row.get::<Option<i64>, _>(6).map(|p| p as u64),
            reminder.period_ms
        );
        assert_eq!(Bytes::from(row.get::<Vec<u8>, _>(7)), reminder.payload);
        assert_eq!(row.get::<String, _>(8), reminder.state.as_str());
        assert_eq!(row.get::<Option<String>, _>(9), reminder.last_error);
        assert_eq!(
            row.get::<Option<DateTime<Utc>>, _>(10),
            reminder.last_fired_at
        );
    }
    let micros = |t: DateTime<Utc>| DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap();
    assert_eq!(
        api[0],
        StoredReminder {
            stream: stream.clone(),
            name: "once".into(),
            reminder_id: id_of(&once),
            shard: 11,
            due_at: micros(due),
            period_ms: None,
            payload: Bytes::from_static(&[1, 2, 3]),
            state: ReminderState::Rejected,
            last_error: Some("closed: \"quoted\" ünïcode\nline".into()),
            last_fired_at: Some(micros(fired_at)),
        }
    );
    assert_eq!(api[1].due_at, micros(due + TimeDelta::days(1)));
    assert_eq!(api[1].state, ReminderState::Scheduled);
    assert_eq!(api[1].period_ms, Some(86_400_000));
    assert_eq!(api[1].last_error, None);
}

/// Finds the server process of a statement waiting for a lock, whose text contains `needle`.
async fn waiting_backend(pool: &sqlx::PgPool, needle: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()
             LIMIT 1",
        )
        .bind(needle)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(Instant::now() < deadline, "no statement waits on a lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection that breaks after the events were inserted but before `COMMIT` was sent stores
/// nothing: the error is retryable and not indeterminate, and neither the events nor the
/// reminder changes are there.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_lost_before_commit_stores_nothing_and_is_retryable() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let stream = fresh_stream("lost-remind");
    let due = now_micros();
    events
        .append_with_reminders(
            &stream,
            0,
            Vec::new(),
            vec![schedule("x", due, None, b"x")],
            None,
        )
        .await
        .unwrap();
    let before = events.reminders_of(&stream).await.unwrap();
    // Another transaction locks the reminder's row, so the call stops at its schedule of x,
    // after its events were inserted.
    let mut blocker = events.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM reminders WHERE aggregate_id = $1 FOR UPDATE")
        .bind(stream.aggregate_id())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let call = {
        let (events, stream) = (events.clone(), stream.clone());
        tokio::spawn(async move {
            events
                .append_with_reminders(
                    &stream,
                    0,
                    numbered_events(0, 3),
                    vec![schedule("x", due, None, b"replaced")],
                    None,
                )
                .await
        })
    };
    let pid = waiting_backend(events.pool(), "INSERT INTO reminders").await;
    let advisory: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND granted",
    )
    .bind(pid)
    .fetch_one(events.pool())
    .await
    .unwrap();
    assert_eq!(advisory, 1, "the call holds its stream's reminder lock");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(events.pool())
        .await
        .unwrap();
    let outcome = call.await.unwrap();
    blocker.rollback().await.unwrap();
    let error = outcome.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(!error.is_indeterminate(), "{error:?}");
    assert_eq!(events.stream_version(&stream).await.unwrap(), 0);
    assert_eq!(events.reminders_of(&stream).await.unwrap(), before);
    // The store goes on.
    events
        .append_with_reminders(
            &stream,
            0,
            numbered_events(0, 1),
            vec![schedule("x", due, None, b"again")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(events.stream_version(&stream).await.unwrap(), 1);
}

/// A server that does not answer before `COMMIT` within the client timeout: the call returns
/// `Unavailable` in about that time (nothing can have committed: the connection is closed and
/// `COMMIT` was never sent), and once the server moves on nothing of it is stored.
#[tokio::test(flavor = "multi_thread")]
async fn no_answer_before_commit_is_unavailable_and_stores_nothing() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (events, _) = db.stores(StoreLimits::default()).await.unwrap();
    let events = events.with_client_timeout(Duration::from_millis(500));
    let stream = fresh_stream("silent-remind");
    let due = now_micros();
    events
        .append_with_reminders(
            &stream,
            0,
            Vec::new(),
            vec![schedule("x", due, None, b"x")],
            None,
        )
        .await
        .unwrap();
    let before = events.reminders_of(&stream).await.unwrap();
    let mut blocker = events.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM reminders WHERE aggregate_id = $1 FOR UPDATE")
        .bind(stream.aggregate_id())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = events
        .append_with_reminders(
            &stream,
            0,
            numbered_events(0, 2),
            vec![schedule("x", due, None, b"replaced")],
            None,
        )
        .await;
    let took = started.elapsed();
    assert!(
        matches!(outcome, Err(StoreError::Unavailable { .. })),
        "{outcome:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    blocker.rollback().await.unwrap();
    // The abandoned server process runs on into its closed socket and rolls back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE '%INSERT INTO reminders%'
               AND state <> 'idle' AND pid <> pg_backend_pid()",
        )
        .fetch_one(events.pool())
        .await
        .unwrap();
        if waiting == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(events.stream_version(&stream).await.unwrap(), 0);
    assert_eq!(events.reminders_of(&stream).await.unwrap(), before);
    assert_eq!(names(&events, &stream).await, ["x"]);
}

/// The scheduler's two queries on 100 000 reminders (64 shards, a tenth rejected, due times over
/// two hours around now): each is a bounded ordered scan of its partial index (no sort of every
/// due row), also as the generic plan a prepared statement settles on, and with reminders to
/// skip. The plans are printed (`--nocapture`).
#[tokio::test(flavor = "multi_thread")]
async fn due_reminders_scan_their_partial_indexes_on_100_000_rows() {
    let Some(db) = fresh_database().await else {
        return;
    };
    // One connection, so the statements the store prepared are visible to EXPLAIN EXECUTE.
    let events = PgEventStore::connect(&db.config().max_connections(1))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO reminders (aggregate_type, aggregate_id, name, reminder_id, shard, due_at,
                                period_ms, payload, state)
         SELECT 'bench', 'agg-' || (i / 4), 'r' || (i % 4), gen_random_uuid(), i % 64,
                now() - interval '1 hour' + (i % 7200) * interval '1 second',
                CASE WHEN i % 3 = 0 THEN 60000 END, '\\x00'::bytea,
                CASE WHEN i % 10 = 0 THEN 'rejected' ELSE 'scheduled' END
         FROM generate_series(1, 100000) AS i",
    )
    .execute(events.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE reminders")
        .execute(events.pool())
        .await
        .unwrap();
    let now = Utc::now();
    let all = DueReminders {
        shards: None,
        due_by: now,
        limit: 100,
        skip: Vec::new(),
    };
    let some = DueReminders {
        shards: Some((0..8).collect()),
        due_by: now,
        limit: 100,
        skip: Vec::new(),
    };
    for query in [&all, &some] {
        let started = Instant::now();
        let found = events.due_reminders(query).await.unwrap();
        println!(
            "{:?} shards: {} rows in {:?}",
            query.shards,
            found.len(),
            started.elapsed()
        );
        assert_eq!(found.len(), 100);
        assert!(found.windows(2).all(|w| w[0].due_at <= w[1].due_at));
        assert!(found.iter().all(|r| r.due_at <= now));
        if let Some(shards) = &query.shards {
            assert!(found.iter().all(|r| shards.contains(&r.shard)));
        }
    }
    let mut conn = events.pool().acquire().await.unwrap();
    let prepared: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, statement FROM pg_prepared_statements
         WHERE statement LIKE '%FROM reminders%' AND statement LIKE '%due_at <=%'
           AND statement NOT LIKE '%pg_prepared_statements%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(prepared.len(), 2, "{prepared:?}");
    for mode in ["force_custom_plan", "force_generic_plan"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
            .execute(&mut *conn)
            .await
            .unwrap();
        for (name, statement) in &prepared {
            let in_shards = statement.contains("UNNEST");
            // With a reminder to skip: a filter on the same scan.
            let skip = format!("'{{{}}}'", Uuid::now_v7());
            let args = if in_shards {
                format!("'{{0,1,2,3,4,5,6,7}}', '{}', 100, {skip}", now.to_rfc3339())
            } else {
                format!("'{}', 100, {skip}", now.to_rfc3339())
            };
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE {name}({args})"
            )))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            let plan = plan.join("\n");
            println!(
                "--- {mode}, {}:\n{plan}\n",
                if in_shards {
                    "some shards"
                } else {
                    "every shard"
                }
            );
            let index = if in_shards {
                "reminders_shard_due_idx"
            } else {
                "reminders_due_idx"
            };
            assert!(plan.contains(index), "{mode}: {plan}");
            assert!(!plan.contains("Seq Scan"), "{mode}: {plan}");
            assert!(!plan.contains("Sort Method: external"), "{mode}: {plan}");
        }
    }
}
