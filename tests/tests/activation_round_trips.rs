//! Round trips of a cold command on PostgreSQL, counted on the wire: the executor's pool
//! reaches the server through a proxy that counts the statements the client runs (`Execute`
//! messages; each is one round trip once prepared on the connection, and the test prepares
//! them first). sqlx's ping of a connection returning to its pool runs no statement and is off
//! the command's path; it is not counted.
//!
//! Events and snapshots share a database, so activation reads the newest snapshot and the
//! events after it in one statement; the command's append is the second and last round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aggregate_actors::event_stores::testing::fresh_database;
use aggregate_actors::event_stores::{
    EventStore, PgEventStore, PgSnapshotStore, SnapshotStore, StoreLimits,
};
use aggregate_actors::strategy::{EveryNEvents, Never};
use aggregate_actors::{AggregateSettings, Executor};
use integration_tests::proxy::{FaultProxy, server_addr};
use integration_tests::wallet::{Wallet, WalletCommand};

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
    let proxy = FaultProxy::start(server_addr(db.url()));
    // One connection, so the statements prepared by the warm-up serve the measured command.
    let config = db.config().max_connections(1);
    let config = aggregate_actors::event_stores::PgConfig {
        url: proxy.url_for(db.url()),
        ..config
    };
    let pg_events = PgEventStore::connect(&config).await.unwrap();
    let pg_snapshots =
        PgSnapshotStore::with_migrated_pool(pg_events.pool().clone(), StoreLimits::default());
    let events: Arc<dyn EventStore> = Arc::new(pg_events);
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(pg_snapshots);

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
        (activation.snapshot_version, activation.events_replayed),
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
