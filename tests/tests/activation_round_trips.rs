//! Round trips of a cold command on PostgreSQL, counted on the wire: the executor's pool
//! reaches the server through a proxy that counts the statements the client runs (`Execute`
//! messages; each is one round trip once prepared on the connection, and the test prepares
//! them first). sqlx's ping of a connection returning to its pool runs no statement and is off
//! the command's path; it is not counted.
//!
//! Events and snapshots share a database, so activation reads the newest snapshot and the
//! events after it in one statement; the command's append is the second and last round trip.
//! A creation command on a brand-new stream skips the read: its append is its only round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aggregate_actors::Aggregate;
use aggregate_actors::Context;
use aggregate_actors::event_stores::testing::TestDatabase;
use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{
    EventStore, PgEventStore, PgSnapshotStore, SnapshotStore, StoreLimits,
};
use aggregate_actors::strategy::{EveryNEvents, Never};
use aggregate_actors::{AggregateSettings, Executor};
use integration_tests::proxy::{FaultProxy, server_addr};
use integration_tests::wallet::{Wallet, WalletCommand};
use serde::{Deserialize, Serialize};

fn executor(
    events: &Arc<dyn EventStore>,
    snapshots: &Arc<dyn SnapshotStore>,
    settings: AggregateSettings<Wallet>,
) -> Executor {
    Executor::builder(Arc::clone(events), Arc::clone(snapshots))
        .register::<Wallet>(settings)
        .build()
        .unwrap()
}

/// An event store and a snapshot store on one PostgreSQL connection, reached through a
/// statement-counting proxy.
async fn counted_stores(
    db: &TestDatabase,
) -> (FaultProxy, Arc<dyn EventStore>, Arc<dyn SnapshotStore>) {
    let proxy = FaultProxy::start(server_addr(db.url()));
    // One connection, so the statements prepared by a warm-up serve the measured command.
    let config = db.config().max_connections(1);
    let config = aggregate_actors::event_stores::PgConfig {
        url: proxy.url_for(db.url()),
        ..config
    };
    let pg_events = PgEventStore::connect(&config).await.unwrap();
    let pg_snapshots =
        PgSnapshotStore::with_migrated_pool(pg_events.pool().clone(), StoreLimits::default());
    (proxy, Arc::new(pg_events), Arc::new(pg_snapshots))
}

/// A cold aggregate with a snapshot at version 20 and 5 events after it: its first command
/// costs two statements on the wire, one to activate (snapshot and tail in one statement) and
/// one to append; the activation started from the snapshot and replayed exactly the 5 events.
/// A state read of another cold aggregate costs one statement: no existence check first.
#[tokio::test(flavor = "multi_thread")]
async fn a_cold_aggregate_with_a_snapshot_activates_in_one_round_trip_and_a_cold_state_read_is_one_statement()
 {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (proxy, events, snapshots) = counted_stores(&db).await;

    let writer = executor(
        &events,
        &snapshots,
        AggregateSettings::new()
            .strategy(EveryNEvents::new(10))
            .snapshot_on_passivation(false),
    );
    for id in ["warm", "cold", "read"] {
        for _ in 0..25 {
            writer
                .execute::<Wallet>(id, WalletCommand::deposit(1))
                .await
                .unwrap();
        }
    }
    writer.flush_snapshots().await;
    writer.shutdown().await;

    let reader = executor(
        &events,
        &snapshots,
        AggregateSettings::new()
            .strategy(Never)
            .snapshot_on_passivation(false),
    );
    // Prepares the activation read and the append on the pool's one connection.
    reader
        .execute::<Wallet>("warm", WalletCommand::deposit(1))
        .await
        .unwrap();

    let before = proxy.stats().pg_statements;
    let committed = reader
        .execute::<Wallet>("cold", WalletCommand::deposit(1))
        .await
        .unwrap();
    let statements = proxy.stats().pg_statements - before;

    assert_eq!(committed.version, 26);
    let activation = reader
        .stats_of::<Wallet>()
        .unwrap()
        .aggregate
        .last_activation
        .unwrap();
    assert_eq!(
        (activation.snapshot_version(), activation.events_replayed),
        (Some(20), 5),
        "activated from the snapshot at 20, replaying 21..=25"
    );
    assert_eq!(
        statements, 2,
        "a cold command with a snapshot: one read to activate, one append"
    );

    let before = proxy.stats().pg_statements;
    let view = reader.state::<Wallet>("read").await.unwrap();
    let statements = proxy.stats().pg_statements - before;
    assert_eq!(view.version, 25);
    assert_eq!(
        statements, 1,
        "a cold state read: the activation's read is also the existence check"
    );
    reader.shutdown().await;
}

/// A counter opened by a creation command; `HINT = false` is the same aggregate without the hint.
struct Counter<const HINT: bool>;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum CounterEvent {
    Opened,
    Added,
}

#[derive(Debug, thiserror::Error)]
#[error("already open")]
struct AlreadyOpen;

impl<const HINT: bool> Aggregate for Counter<HINT> {
    const TYPE: &'static str = "counter";
    type Command = &'static str;
    type Event = CounterEvent;
    type State = u64;
    type Error = AlreadyOpen;

    fn decide(
        state: &u64,
        command: &&'static str,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<CounterEvent>, AlreadyOpen> {
        match *command {
            "open" if *state > 0 => Err(AlreadyOpen),
            "open" => Ok(vec![CounterEvent::Opened]),
            _ => Ok(vec![CounterEvent::Added]),
        }
    }

    fn apply(state: &mut u64, _: &CounterEvent) {
        *state += 1;
    }

    fn is_creation(command: &&'static str) -> bool {
        HINT && *command == "open"
    }
}

/// Statements on the wire for a first command, "open", on each of `ids` (brand-new streams).
async fn statements_to_open<A: Aggregate<Command = &'static str>>(ids: [&str; 2]) -> Vec<u64> {
    let db = fresh_database().await.expect("PostgreSQL");
    let (proxy, events, snapshots) = counted_stores(&db).await;
    let executor = Executor::builder(events, snapshots)
        .register::<A>(
            AggregateSettings::new()
                .strategy(Never)
                .snapshot_on_passivation(false),
        )
        .build()
        .unwrap();
    // Prepares the activation read and the append on the pool's one connection.
    executor.execute::<A>("warm", "add").await.unwrap();
    assert!(executor.passivate::<A>("warm").await.unwrap());
    executor.execute::<A>("warm", "add").await.unwrap();
    let mut counts = Vec::new();
    for id in ids {
        let before = proxy.stats().pg_statements;
        let opened = executor.execute::<A>(id, "open").await.unwrap();
        assert_eq!(opened.version, 1);
        counts.push(proxy.stats().pg_statements - before);
    }
    executor.shutdown().await;
    counts
}

/// A creation command on a brand-new stream decides on the default state and appends with
/// expected version 0: one statement. The same aggregate without the hint reads first: two.
#[tokio::test(flavor = "multi_thread")]
async fn a_creation_command_on_a_brand_new_stream_costs_one_statement_instead_of_two() {
    if fresh_database().await.is_none() {
        return;
    }
    assert_eq!(
        statements_to_open::<Counter<true>>(["new-1", "new-2"]).await,
        vec![1, 1],
        "creation command on a new stream: the append alone"
    );
    assert_eq!(
        statements_to_open::<Counter<false>>(["new-1", "new-2"]).await,
        vec![2, 2],
        "without the hint: one read to activate, one append"
    );
}

/// A snapshot write is two statements on the wire: the save, which returns the row as stored
/// for verification (no read-back query), and the retention pass.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_write_is_two_statements_save_with_read_back_and_retention() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let (proxy, events, snapshots) = counted_stores(&db).await;
    let executor = executor(
        &events,
        &snapshots,
        AggregateSettings::new()
            .strategy(Never)
            .snapshot_on_passivation(false),
    );
    for id in ["warm", "snap"] {
        for _ in 0..3 {
            executor
                .execute::<Wallet>(id, WalletCommand::deposit(1))
                .await
                .unwrap();
        }
    }
    // Prepares the save and the retention statements on the pool's one connection.
    executor.snapshot_now::<Wallet>("warm").await.unwrap();

    let before = proxy.stats().pg_statements;
    assert_eq!(executor.snapshot_now::<Wallet>("snap").await.unwrap(), 3);
    let statements = proxy.stats().pg_statements - before;
    assert_eq!(
        statements, 2,
        "one save returning the stored row, one retention pass"
    );
    let stats = executor.stats_of::<Wallet>().unwrap().aggregate;
    assert_eq!((stats.snapshots_taken, stats.snapshots_failed), (2, 0));
    executor.shutdown().await;
}
