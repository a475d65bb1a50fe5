//! Invariant 6 at the edges, through the executor on PostgreSQL: limits hold to the byte (a
//! payload exactly at the store's limit is stored, one byte more is refused), a multi-event
//! command with one bad event stores none of them, ids are checked by bytes not characters and
//! at every entry point, odd but valid ids are stored byte for byte, and an event in the store
//! that does not decode gives a typed error, never a panic. Nothing refused is ever stored.
//!
//! Not repeated here (already proven elsewhere): the empty id, a 10 000-byte id, a 2 MiB payload
//! and an unregistered type on `execute` (aggregate-actors/tests/commands.rs), and the HTTP
//! API's 4xx answers to malformed JSON, unknown commands and types, bad ids and oversized bodies
//! (sample-app/tests/http_api.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aggregate_actors::Context;
use aggregate_actors::event_stores::testing::{TestDatabase, fresh_database};
use aggregate_actors::event_stores::{
    EventStore, InvalidInput, MAX_ID_LEN, NewEvent, SnapshotStore, StoreLimits,
};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{
    ActivationError, Aggregate, AggregateSettings, At, CommandError, Executor, ExecutorError, codec,
};
use integration_tests::audit::{read_wallet, wallet_ids, wallet_stream};
use integration_tests::wallet::{Wallet, WalletCommand, WalletEvent, fold};
use sqlx::postgres::PgPool;
use uuid::Uuid;

const PAYLOAD_LIMIT: usize = 4 * 1024;
const EVENTS_LIMIT: usize = 100;

struct Setup {
    _database: TestDatabase,
    pool: PgPool,
    events: Arc<dyn EventStore>,
    executor: Executor,
}

async fn setup() -> Option<Setup> {
    let database = fresh_database().await?;
    let limits = StoreLimits {
        max_event_payload_bytes: PAYLOAD_LIMIT,
        max_events_per_append: EVENTS_LIMIT,
        ..StoreLimits::default()
    };
    let (events, snapshots) = database.stores(limits).await.unwrap();
    let pool = events.pool().clone();
    let events: Arc<dyn EventStore> = Arc::new(events);
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(snapshots);
    let executor = Executor::builder(Arc::clone(&events), snapshots)
        .register::<Wallet>(AggregateSettings::new().strategy(EveryNEvents::new(2)))
        .build()
        .unwrap();
    Some(Setup {
        _database: database,
        pool,
        events,
        executor,
    })
}

async fn events_in_database(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A memo text whose event encodes to exactly `size` bytes for command `command`.
fn memo_of_encoded_size(command: Uuid, size: usize) -> String {
    let encoded = |len: usize| {
        codec::encode(&WalletEvent::Memoed {
            command,
            part: 0,
            parts: 1,
            text: "m".repeat(len),
        })
        .unwrap()
        .len()
    };
    let overhead = encoded(size / 2) - size / 2;
    let text = "m".repeat(size - overhead);
    assert_eq!(encoded(text.len()), size, "memo sizing");
    text
}

/// Asserts `result` is the typed "payload too large" refusal (without printing the payload).
fn assert_too_large<T>(what: &str, result: &Result<T, CommandError<impl std::error::Error>>) {
    match result {
        Err(CommandError::NotStored(ExecutorError::InvalidInput(
            InvalidInput::PayloadTooLarge { .. },
        ))) => {}
        Err(other) => panic!("{what}: refused with {other}, not as too large"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_at_the_limit_is_stored_one_byte_over_is_refused_and_one_bad_event_sinks_its_whole_command()
 {
    let Some(s) = setup().await else { return };
    let id = "limits";

    let command = Uuid::now_v7();
    let exact = memo_of_encoded_size(command, PAYLOAD_LIMIT);
    let stored = s
        .executor
        .execute::<Wallet>(
            id,
            WalletCommand::Memo {
                command,
                text: exact,
            },
        )
        .await;
    assert_eq!(
        stored.unwrap().version,
        1,
        "exactly at the limit is accepted"
    );

    let command = Uuid::now_v7();
    let over = memo_of_encoded_size(command, PAYLOAD_LIMIT + 1);
    let refused = s
        .executor
        .execute::<Wallet>(
            id,
            WalletCommand::Memo {
                command,
                text: over,
            },
        )
        .await;
    assert_too_large("one byte over the limit", &refused);

    // Nine small memos and one too large: none of the ten is stored.
    let command = Uuid::now_v7();
    let mut texts = vec!["fine".to_owned(); 9];
    texts.push("x".repeat(PAYLOAD_LIMIT));
    let refused = s
        .executor
        .execute::<Wallet>(id, WalletCommand::Memos { command, texts })
        .await;
    assert_too_large("nine small memos and one too large", &refused);

    // One event more than an append may carry, all of them small.
    let refused = s
        .executor
        .execute::<Wallet>(
            id,
            WalletCommand::Memos {
                command: Uuid::now_v7(),
                texts: vec![String::new(); EVENTS_LIMIT + 1],
            },
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::NotStored(ExecutorError::InvalidInput(
                InvalidInput::TooManyEvents { count, max }
            ))) if count == EVENTS_LIMIT + 1 && max == EVENTS_LIMIT
        ),
        "{refused:?}"
    );
    let full = s
        .executor
        .execute::<Wallet>(
            id,
            WalletCommand::Memos {
                command: Uuid::now_v7(),
                texts: vec![String::new(); EVENTS_LIMIT],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        full.version,
        1 + EVENTS_LIMIT as u64,
        "exactly at the limit"
    );

    let stored = read_wallet(&*s.events, id).await.unwrap();
    assert_eq!(stored.len(), 1 + EVENTS_LIMIT, "nothing refused was stored");
    assert_eq!(events_in_database(&s.pool).await, 1 + EVENTS_LIMIT as i64);
    let view = s.executor.state::<Wallet>(id).await.unwrap();
    assert_eq!(view.state, fold(stored.iter().map(|e| &e.event)));
    s.executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_get_a_typed_error_at_every_entry_point_and_odd_valid_ids_are_stored_byte_for_byte()
{
    let Some(s) = setup().await else { return };
    let bad: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("257 ASCII bytes", "x".repeat(MAX_ID_LEN + 1)),
        ("86 characters but 258 bytes", "€".repeat(86)),
        ("NUL (PostgreSQL text cannot hold it)", "a\0b".into()),
        ("newline", "line\nbreak".into()),
        ("DEL", "del\u{7f}".into()),
        ("C1 control (NEL)", "nel\u{85}".into()),
    ];
    for (what, id) in &bad {
        let is_invalid = |e: &ExecutorError| matches!(e, ExecutorError::InvalidInput(_));
        match s
            .executor
            .execute::<Wallet>(id, WalletCommand::deposit(1))
            .await
        {
            Err(CommandError::NotStored(e)) if is_invalid(&e) => {}
            other => panic!("{what}: execute gave {other:?}"),
        }
        let state = s.executor.state::<Wallet>(id).await;
        assert!(
            state.as_ref().is_err_and(is_invalid),
            "{what}: state gave {state:?}"
        );
        let snapshot = s.executor.snapshot_now::<Wallet>(id).await;
        assert!(
            snapshot.as_ref().is_err_and(is_invalid),
            "{what}: snapshot_now gave {snapshot:?}"
        );
        let past = s.executor.reconstruct::<Wallet>(id, At::Version(1)).await;
        assert!(
            past.as_ref().is_err_and(is_invalid),
            "{what}: reconstruct gave {past:?}"
        );
        let passivated = s.executor.passivate::<Wallet>(id).await;
        assert!(
            passivated.as_ref().is_err_and(is_invalid),
            "{what}: passivate gave {passivated:?}"
        );
        assert!(
            !s.executor.is_live::<Wallet>(id),
            "{what}: an actor was activated"
        );
    }
    assert_eq!(
        events_in_database(&s.pool).await,
        0,
        "a bad id stored something"
    );

    let odd: Vec<String> = vec![
        "x".repeat(MAX_ID_LEN),
        "é".repeat(MAX_ID_LEN / 2),
        "'; DROP TABLE events; --".into(),
        "🦀 with spaces / slashes ? and % signs".into(),
        "  leading and trailing  ".into(),
        "\\x00 is not a NUL".into(),
    ];
    for id in &odd {
        let done = s
            .executor
            .execute::<Wallet>(id, WalletCommand::deposit(7))
            .await
            .unwrap_or_else(|e| panic!("{id:?}: {e}"));
        assert_eq!(done.version, 1);
        s.executor.passivate::<Wallet>(id).await.unwrap();
        let view = s.executor.state::<Wallet>(id).await.unwrap();
        assert_eq!(view.state.balance, 7, "{id:?}");
    }
    let mut stored = wallet_ids(&s.pool).await;
    let mut expected = odd.clone();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected, "ids are stored byte for byte");
    s.executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_type_gets_a_typed_error_at_every_entry_point() {
    let Some(s) = setup().await else { return };
    struct Stranger;
    impl Aggregate for Stranger {
        const TYPE: &'static str = "stranger";
        type Command = ();
        type Event = ();
        type State = ();
        type Error = std::convert::Infallible;
        fn decide(
            _: &(),
            _: &(),
            _ctx: &mut Context<'_, Self>,
        ) -> Result<Vec<()>, std::convert::Infallible> {
            Ok(vec![()])
        }
        fn apply(_: &mut (), _: &()) {}
    }
    let unknown = |e: &ExecutorError| matches!(e, ExecutorError::UnknownAggregateType("stranger"));
    assert!(
        s.executor
            .state::<Stranger>("s")
            .await
            .is_err_and(|e| unknown(&e))
    );
    assert!(
        s.executor
            .snapshot_now::<Stranger>("s")
            .await
            .is_err_and(|e| unknown(&e))
    );
    assert!(
        s.executor
            .reconstruct::<Stranger>("s", At::Version(1))
            .await
            .is_err_and(|e| unknown(&e))
    );
    assert!(
        s.executor
            .passivate::<Stranger>("s")
            .await
            .is_err_and(|e| unknown(&e))
    );
    assert!(!s.executor.is_live::<Stranger>("s"));
    assert!(s.executor.stats_of::<Stranger>().is_none());
    assert_eq!(events_in_database(&s.pool).await, 0);
    s.executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_event_that_does_not_decode_gives_a_typed_error_not_a_panic_and_blocks_only_its_own_aggregate()
 {
    let Some(s) = setup().await else { return };
    let poisons: Vec<(&str, Vec<u8>)> = vec![
        ("empty payload", Vec::new()),
        ("random bytes", vec![0xC1, 0xFF, 0x00, 0x13, 0x37]),
        (
            "an event type this build does not know",
            codec::encode(&serde_unknown_variant()).unwrap(),
        ),
        ("a valid event cut short", {
            let mut bytes = codec::encode(&WalletEvent::Withdrew {
                command: Uuid::now_v7(),
                amount: 5,
            })
            .unwrap();
            bytes.truncate(bytes.len() - 3);
            bytes
        }),
        ("a map where a string should be", {
            // {"Memoed": {"command": <uuid>, "part": 0, "parts": 1, "text": {"a": 1}}}
            let mut bytes = vec![0x81, 0xA6];
            bytes.extend_from_slice(b"Memoed");
            bytes.push(0x84);
            bytes.extend_from_slice(&[0xA7]);
            bytes.extend_from_slice(b"command");
            bytes.extend_from_slice(&[0xC4, 16]);
            bytes.extend_from_slice(Uuid::now_v7().as_bytes());
            bytes.extend_from_slice(&[0xA4]);
            bytes.extend_from_slice(b"part");
            bytes.push(0x00);
            bytes.extend_from_slice(&[0xA5]);
            bytes.extend_from_slice(b"parts");
            bytes.push(0x01);
            bytes.extend_from_slice(&[0xA4]);
            bytes.extend_from_slice(b"text");
            bytes.extend_from_slice(&[0x81, 0xA1, b'a', 0x01]);
            bytes
        }),
    ];
    for (n, (what, payload)) in poisons.into_iter().enumerate() {
        let id = format!("poisoned-{n}");
        s.executor
            .execute::<Wallet>(&id, WalletCommand::deposit(10))
            .await
            .unwrap();
        s.executor.passivate::<Wallet>(&id).await.unwrap();
        s.events
            .append(
                &wallet_stream(&id),
                1,
                vec![NewEvent::new("Deposited", 1, payload)],
            )
            .await
            .unwrap();

        let is_corrupt = |e: &ExecutorError| {
            matches!(e, ExecutorError::Activation(a)
                if matches!(&**a, ActivationError::CorruptEvent { version: 2, .. }))
                && !e.is_retryable()
        };
        for _ in 0..2 {
            match s
                .executor
                .execute::<Wallet>(&id, WalletCommand::deposit(1))
                .await
            {
                Err(CommandError::NotStored(e)) if is_corrupt(&e) => {}
                other => panic!("{what}: execute gave {other:?}"),
            }
        }
        let state = s.executor.state::<Wallet>(&id).await;
        assert!(
            state.as_ref().is_err_and(is_corrupt),
            "{what}: state gave {state:?}"
        );
        // The history before the bad event is still readable.
        let before = s
            .executor
            .reconstruct::<Wallet>(&id, At::Version(1))
            .await
            .unwrap_or_else(|e| panic!("{what}: reconstruct before the bad event: {e}"));
        assert_eq!(before.state.balance, 10, "{what}");
        assert_eq!(
            s.events.stream_version(&wallet_stream(&id)).await.unwrap(),
            2,
            "{what}: nothing more was stored"
        );
    }
    // Other aggregates are unaffected.
    let fine = s
        .executor
        .execute::<Wallet>("healthy", WalletCommand::deposit(3))
        .await
        .unwrap();
    assert_eq!(fine.version, 1);
    s.executor.shutdown().await;
}

/// `{"Refunded": {"amount": 5}}`: a variant `WalletEvent` does not have.
fn serde_unknown_variant()
-> std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> {
    let mut inner = std::collections::BTreeMap::new();
    inner.insert("amount".to_owned(), 5);
    let mut outer = std::collections::BTreeMap::new();
    outer.insert("Refunded".to_owned(), inner);
    outer
}
