//! Exactly once across a restart, on PostgreSQL: a command id acknowledged by one executor,
//! whose aggregate was then snapshotted and passivated and whose executor was shut down with
//! its pools closed, is sent again to a completely new executor (new pools) on the same
//! database. The new executor answers with the original outcome, flagged as a duplicate, and
//! stores nothing — from the window of recent command ids carried in the snapshot, or, beyond
//! that window, from the store's unique event id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aggregate_actors::event_stores::testing::{TestDatabase, fresh_database};
use aggregate_actors::event_stores::{EventStore, SnapshotStore, StoreLimits};
use aggregate_actors::strategy::Never;
use aggregate_actors::{
    AggregateSettings, CommandError, CommandId, CommandOptions, Committed, DedupWindow, Executor,
};
use integration_tests::wallet::{Wallet, WalletCommand, WalletError, WalletEvent};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool};
use uuid::Uuid;

const ID: &str = "restarted";

/// A new executor on new pools: nothing shared with any earlier one but the database. It
/// snapshots only when asked ([`Executor::snapshot_now`]).
async fn new_executor(database: &TestDatabase, window: DedupWindow) -> (Executor, PgPool) {
    let (events, snapshots) = database.stores(StoreLimits::default()).await.unwrap();
    let pool = events.pool().clone();
    let events: Arc<dyn EventStore> = Arc::new(events);
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(snapshots);
    let executor = Executor::builder(events, snapshots)
        .register::<Wallet>(
            AggregateSettings::new()
                .strategy(Never)
                .snapshot_on_passivation(false)
                .dedup(window),
        )
        .build()
        .unwrap();
    (executor, pool)
}

/// Passivates every actor, shuts the executor down and closes its pool: the "process" is gone.
async fn stop((executor, pool): (Executor, PgPool)) {
    executor.passivate_all().await;
    assert!(
        !executor.is_live::<Wallet>(ID),
        "the aggregate was passivated"
    );
    executor.shutdown().await;
    drop(executor);
    // Both stores share this pool.
    pool.close().await;
    assert!(pool.is_closed());
}

async fn send(
    executor: &Executor,
    command: WalletCommand,
) -> Result<Committed<Wallet>, CommandError<WalletError>> {
    let id = CommandId::from(command.id().unwrap());
    executor
        .execute_with::<Wallet>(ID, command, CommandOptions::new().command_id(id))
        .await
}

/// Raw SQL: events stored with `command_id`, and events in the stream.
async fn stored(database: &TestDatabase, command_id: Uuid) -> (i64, i64) {
    let mut conn = PgConnection::connect(database.url()).await.unwrap();
    let of_command: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE command_id = $1")
        .bind(command_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let in_stream: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'wallet' AND aggregate_id = $1",
    )
    .bind(ID)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    (of_command, in_stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_id_resent_to_a_new_executor_after_snapshot_and_passivation_is_answered_from_the_snapshot_window()
 {
    let Some(database) = fresh_database().await else {
        return;
    };
    let window = DedupWindow::default();
    let x = Uuid::now_v7();

    // First "process": a deposit, then X (a withdrawal) at version 2, a snapshot at version 2,
    // then one more command so that activation replays a tail — which does not hold X.
    let first = new_executor(&database, window).await;
    let (executor, _) = &first;
    send(executor, WalletCommand::deposit(10)).await.unwrap();
    let original = send(
        executor,
        WalletCommand::Withdraw {
            command: x,
            amount: 5,
        },
    )
    .await
    .unwrap();
    assert!(!original.duplicate);
    assert_eq!(original.version, 2);
    assert_eq!(executor.snapshot_now::<Wallet>(ID).await.unwrap(), 2);
    send(executor, WalletCommand::deposit(1)).await.unwrap();
    stop(first).await;
    assert_eq!(stored(&database, x).await, (1, 3));

    // Second "process": the same command id, with an amount the wallet would refuse if the
    // command were decided again (balance 6): only the remembered id can answer it with Ok.
    let (second, _pool) = new_executor(&database, window).await;
    let again = send(
        &second,
        WalletCommand::Withdraw {
            command: x,
            amount: 1_000_000,
        },
    )
    .await
    .expect("a command id applied before the restart is answered, not decided again");
    assert!(
        again.duplicate,
        "the resent command is flagged as a duplicate"
    );
    assert_eq!(again.command_id, CommandId::from(x));
    assert_eq!(again.version, original.version, "the original version");
    assert_eq!(
        again.events,
        vec![WalletEvent::Withdrew {
            command: x,
            amount: 5
        }],
        "the original events, not a new decision"
    );
    assert_eq!(
        stored(&database, x).await,
        (1, 3),
        "nothing was stored for the resent command"
    );

    let view = second.state::<Wallet>(ID).await.unwrap();
    assert_eq!(
        view.activation.snapshot_version(),
        Some(2),
        "the new executor activated from the snapshot"
    );
    assert_eq!(
        view.activation.events_replayed, 1,
        "it replayed only the tail after the snapshot (version 3), which does not hold X: X was \
         known from the snapshot's window"
    );
    assert_eq!((view.version, view.state.balance), (3, 6));
    let stats = second.stats_of::<Wallet>().unwrap().aggregate;
    assert_eq!(
        (
            stats.commands_duplicate,
            stats.commands_rejected,
            stats.commands_succeeded
        ),
        (1, 0, 0)
    );
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_window_a_command_id_resent_to_a_new_executor_is_answered_from_the_store_and_stores_nothing()
 {
    let Some(database) = fresh_database().await else {
        return;
    };
    let window = DedupWindow {
        max_commands: 2,
        max_age: None,
    };
    let x = Uuid::now_v7();

    // First "process": X at version 1, five more commands, a snapshot at version 6 whose window
    // holds only the last two command ids.
    let first = new_executor(&database, window).await;
    let (executor, _) = &first;
    let original = send(
        executor,
        WalletCommand::Deposit {
            command: x,
            amount: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!((original.version, original.duplicate), (1, false));
    for _ in 0..5 {
        send(executor, WalletCommand::deposit(1)).await.unwrap();
    }
    assert_eq!(executor.snapshot_now::<Wallet>(ID).await.unwrap(), 6);
    stop(first).await;
    assert_eq!(stored(&database, x).await, (1, 6));

    let (second, _pool) = new_executor(&database, window).await;
    // X is forgotten: a resend the wallet refuses is refused (and stores nothing) ...
    let refused = send(
        &second,
        WalletCommand::Withdraw {
            command: x,
            amount: 1_000_000,
        },
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(
                WalletError::InsufficientFunds { .. }
            ))
        ),
        "beyond the window the command id is not remembered, so the command is decided: \
         {refused:?}"
    );
    let view = second.state::<Wallet>(ID).await.unwrap();
    assert_eq!(
        (
            view.activation.snapshot_version(),
            view.activation.events_replayed
        ),
        (Some(6), 0),
        "the new executor activated from the snapshot and replayed nothing"
    );
    // ... but a resend that decides an event collides with the stored event id of X.
    let again = send(
        &second,
        WalletCommand::Deposit {
            command: x,
            amount: 777,
        },
    )
    .await
    .expect("a resend beyond the window that decides an event is answered as a duplicate");
    assert!(again.duplicate, "answered as a duplicate");
    assert_eq!(again.version, 1, "the original version");
    assert_eq!(
        again.events,
        vec![WalletEvent::Deposited {
            command: x,
            part: 0,
            parts: 1,
            amount: 10
        }],
        "the original events, read back from the store"
    );
    assert_eq!(
        stored(&database, x).await,
        (1, 6),
        "nothing was stored for either resend"
    );
    let stats = second.stats_of::<Wallet>().unwrap().aggregate;
    assert_eq!(
        (
            stats.commands_duplicate,
            stats.commands_rejected,
            stats.commands_succeeded
        ),
        (1, 1, 0)
    );
    let view = second.state::<Wallet>(ID).await.unwrap();
    assert_eq!((view.version, view.state.balance), (6, 15));
    second.shutdown().await;
}
