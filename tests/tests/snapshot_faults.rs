//! Invariant 4 against PostgreSQL, with the damage done in SQL on the `snapshots` table (what a
//! disk fault, a bad restore, a hand edit or a buggy migration does), not through the store API:
//! every damaged snapshot is detected, counted in `snapshots_skipped_invalid` and skipped for
//! the next older one, deleted snapshots fall back the same way, and a snapshot store that
//! cannot be reached at all (a pool on a closed port) fails no command, only counts
//! `snapshots_failed`. Every case ends in the state folded from the stored events. The same
//! damage done to a delta snapshot, or to the full snapshot it was written against, falls back
//! as far as needed (to the older snapshot, or to a full replay).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregate_actors::codec::{self, CompressionConfig};
use aggregate_actors::event_stores::testing::{TestDatabase, fresh_database};
use aggregate_actors::event_stores::{EventStore, PgSnapshotStore, SnapshotStore, StoreLimits};
use aggregate_actors::strategy::EveryNEvents;
use aggregate_actors::{AggregateSettings, Executor, ExecutorError, Retention};
use integration_tests::audit::{assert_states_equal_fold, read_all_wallets, read_wallet};
use integration_tests::wallet::{Wallet, WalletCommand, WalletState, fold};
use integration_tests::{closed_port_url, reading_executor};
use sqlx::postgres::{PgPool, PgPoolOptions};

struct Stores {
    _database: TestDatabase,
    pool: PgPool,
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
}

async fn stores() -> Option<Stores> {
    let database = fresh_database().await?;
    let (events, snapshots) = database.stores(StoreLimits::default()).await.unwrap();
    Some(Stores {
        pool: events.pool().clone(),
        events: Arc::new(events),
        snapshots: Arc::new(snapshots),
        _database: database,
    })
}

/// 35 deposits with a snapshot every 10 events: snapshots at 10, 20 and 30.
async fn history(stores: &Stores, id: &str, compress: bool) {
    history_with(stores, id, compression_config(compress)).await;
    let compression: String = sqlx::query_scalar(
        "SELECT compression FROM snapshots WHERE aggregate_id = $1 AND version = 30",
    )
    .bind(id)
    .fetch_one(&stores.pool)
    .await
    .unwrap();
    assert_eq!(compression, if compress { "zstd" } else { "none" });
}

/// The history with incremental snapshots: full at 10, deltas against it at 20 and 30, as the
/// rows say (compression, base version, and base checksum equal to the base row's).
async fn incremental_history(stores: &Stores, id: &str) {
    let config = CompressionConfig {
        max_deltas: 5,
        ..compression_config(true)
    };
    history_with(stores, id, config).await;
    let rows: Vec<(i64, String, Option<i64>, Option<bool>)> = sqlx::query_as(
        "SELECT d.version, d.compression, d.base_version, d.base_checksum = b.checksum \
         FROM snapshots d LEFT JOIN snapshots b ON b.aggregate_type = d.aggregate_type \
         AND b.aggregate_id = d.aggregate_id AND b.version = d.base_version \
         WHERE d.aggregate_type = 'wallet' AND d.aggregate_id = $1 ORDER BY d.version",
    )
    .bind(id)
    .fetch_all(&stores.pool)
    .await
    .unwrap();
    let delta = |version| (version, "zstd-delta".to_owned(), Some(10), Some(true));
    assert_eq!(
        rows,
        [(10, "zstd".to_owned(), None, None), delta(20), delta(30)],
        "{id}: a full snapshot and two deltas naming it"
    );
}

fn compression_config(compress: bool) -> CompressionConfig {
    if compress {
        CompressionConfig {
            threshold_bytes: 0,
            algorithm: codec::SnapshotCompression::Zstd { level: 1 },
            ..CompressionConfig::default()
        }
    } else {
        CompressionConfig {
            threshold_bytes: usize::MAX,
            algorithm: codec::SnapshotCompression::Zstd { level: 1 },
            ..CompressionConfig::default()
        }
    }
}

async fn history_with(stores: &Stores, id: &str, compression: CompressionConfig) {
    let executor = Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Wallet>(
            AggregateSettings::new()
                .strategy(EveryNEvents::new(10))
                .snapshot_on_passivation(false)
                .compression_config(compression)
                .retention(Retention {
                    keep_newest: 10,
                    max_age: None,
                }),
        )
        .build()
        .unwrap();
    for i in 0..35 {
        executor
            .execute::<Wallet>(id, WalletCommand::deposit(i * 3 + 1))
            .await
            .unwrap();
        if i % 10 == 9 {
            // One at a time, so the writer does not (rightly) coalesce them.
            executor.flush_snapshots().await;
        }
    }
    executor.shutdown().await;
    let versions: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM snapshots WHERE aggregate_type = 'wallet' AND aggregate_id = $1 \
         ORDER BY version",
    )
    .bind(id)
    .fetch_all(&stores.pool)
    .await
    .unwrap();
    assert_eq!(
        versions,
        [10, 20, 30],
        "{id}: the history left its snapshots"
    );
}

/// How one case damages the snapshot at version 30 of its wallet, in SQL. `$1` is the wallet id.
enum Damage {
    Sql(&'static str),
    /// Replaces the bytes with these, with a valid checksum and sizes.
    ForeignBytes(fn() -> Vec<u8>),
}

struct Case {
    name: &'static str,
    damage: Damage,
    /// The snapshot the fresh activation should start from, and how many it should skip.
    expect_from: Option<u64>,
    expect_skipped: u32,
}

const AT_30: &str = "aggregate_type = 'wallet' AND aggregate_id = $1 AND version = 30";

fn cases() -> Vec<Case> {
    let corrupt = |name, sql| Case {
        name,
        damage: Damage::Sql(sql),
        expect_from: Some(20),
        expect_skipped: 1,
    };
    vec![
        corrupt(
            "bit flip in the middle of the bytes",
            "UPDATE snapshots SET bytes = set_byte(bytes, length(bytes) / 2, \
             get_byte(bytes, length(bytes) / 2) # 16) WHERE {AT_30}",
        ),
        corrupt(
            "bit flip in the first byte",
            "UPDATE snapshots SET bytes = set_byte(bytes, 0, get_byte(bytes, 0) # 1) WHERE {AT_30}",
        ),
        corrupt(
            "bytes truncated to half, sizes left as they were",
            "UPDATE snapshots SET bytes = substring(bytes FROM 1 FOR length(bytes) / 2) \
             WHERE {AT_30}",
        ),
        corrupt(
            "bytes truncated to half, stored size updated to match",
            "UPDATE snapshots SET bytes = substring(bytes FROM 1 FOR length(bytes) / 2), \
             stored_size = length(bytes) / 2 WHERE {AT_30}",
        ),
        corrupt(
            "bytes emptied",
            "UPDATE snapshots SET bytes = ''::bytea, stored_size = 0 WHERE {AT_30}",
        ),
        corrupt(
            "one byte appended",
            "UPDATE snapshots SET bytes = bytes || '\\x00'::bytea WHERE {AT_30}",
        ),
        corrupt(
            "checksum with one bit flipped",
            "UPDATE snapshots SET checksum = checksum # 1 WHERE {AT_30}",
        ),
        corrupt(
            "state schema version bumped",
            "UPDATE snapshots SET state_schema_version = state_schema_version + 1 WHERE {AT_30}",
        ),
        corrupt(
            "state schema version negative",
            "UPDATE snapshots SET state_schema_version = -1 WHERE {AT_30}",
        ),
        corrupt(
            "last_event_id random",
            "UPDATE snapshots SET last_event_id = gen_random_uuid() WHERE {AT_30}",
        ),
        corrupt(
            "last_event_id of the event before",
            "UPDATE snapshots s SET last_event_id = e.event_id FROM events e \
             WHERE e.aggregate_type = 'wallet' AND e.aggregate_id = $1 AND e.version = 29 \
             AND s.aggregate_type = 'wallet' AND s.aggregate_id = $1 AND s.version = 30",
        ),
        corrupt(
            "version moved past the end of the stream",
            "UPDATE snapshots SET version = 1000 WHERE {AT_30}",
        ),
        corrupt(
            "version moved back onto an existing event",
            "UPDATE snapshots SET version = 29 WHERE {AT_30}",
        ),
        corrupt(
            "transplanted from another wallet (valid checksum, decodes, foreign last_event_id)",
            "UPDATE snapshots s SET bytes = o.bytes, checksum = o.checksum, \
             uncompressed_size = o.uncompressed_size, stored_size = o.stored_size, \
             compression = o.compression, last_event_id = o.last_event_id \
             FROM snapshots o WHERE o.aggregate_type = 'wallet' AND o.aggregate_id = '{DONOR}' \
             AND o.version = 30 AND s.aggregate_type = 'wallet' AND s.aggregate_id = $1 \
             AND s.version = 30",
        ),
        corrupt(
            "codec renamed",
            "UPDATE snapshots SET codec = 'json' WHERE {AT_30}",
        ),
        corrupt(
            "compression renamed to an unknown one",
            "UPDATE snapshots SET compression = 'brotli' WHERE {AT_30}",
        ),
        corrupt(
            "compression relabelled as lz4",
            "UPDATE snapshots SET compression = 'lz4' WHERE {AT_30}",
        ),
        corrupt(
            "compression relabelled (none <-> zstd)",
            "UPDATE snapshots SET compression = CASE compression WHEN 'zstd' THEN 'none' \
             ELSE 'zstd' END WHERE {AT_30}",
        ),
        corrupt(
            "uncompressed size off by one",
            "UPDATE snapshots SET uncompressed_size = uncompressed_size + 1 WHERE {AT_30}",
        ),
        corrupt(
            "uncompressed size zero",
            "UPDATE snapshots SET uncompressed_size = 0 WHERE {AT_30}",
        ),
        corrupt(
            "uncompressed size negative",
            "UPDATE snapshots SET uncompressed_size = -1 WHERE {AT_30}",
        ),
        corrupt(
            "stored size negative",
            "UPDATE snapshots SET stored_size = -1 WHERE {AT_30}",
        ),
        Case {
            name: "bytes of another type, with a valid checksum",
            damage: Damage::ForeignBytes(|| codec::encode(&vec!["not", "a", "wallet"]).unwrap()),
            expect_from: Some(20),
            expect_skipped: 1,
        },
        Case {
            name: "random bytes, with a valid checksum",
            damage: Damage::ForeignBytes(|| (0..200u32).map(|i| (i * 73 % 256) as u8).collect()),
            expect_from: Some(20),
            expect_skipped: 1,
        },
        Case {
            name: "zstd frame of another type, with a valid checksum",
            damage: Damage::ForeignBytes(|| {
                zstd::bulk::compress(&codec::encode(&[1u64, 2, 3]).unwrap(), 1).unwrap()
            }),
            expect_from: Some(20),
            expect_skipped: 1,
        },
        Case {
            name: "newest snapshot deleted",
            damage: Damage::Sql("DELETE FROM snapshots WHERE {AT_30}"),
            expect_from: Some(20),
            expect_skipped: 0,
        },
        Case {
            name: "every snapshot deleted",
            damage: Damage::Sql(
                "DELETE FROM snapshots WHERE aggregate_type = 'wallet' AND aggregate_id = $1",
            ),
            expect_from: None,
            expect_skipped: 0,
        },
        Case {
            name: "every snapshot damaged",
            damage: Damage::Sql(
                "UPDATE snapshots SET checksum = checksum # 4 \
                 WHERE aggregate_type = 'wallet' AND aggregate_id = $1",
            ),
            expect_from: None,
            expect_skipped: 3,
        },
        Case {
            name: "newest deleted, next damaged",
            damage: Damage::Sql(
                "WITH gone AS (DELETE FROM snapshots WHERE {AT_30}) \
                 UPDATE snapshots SET last_event_id = gen_random_uuid() \
                 WHERE aggregate_type = 'wallet' AND aggregate_id = $1 AND version = 20",
            ),
            expect_from: Some(10),
            expect_skipped: 1,
        },
    ]
}

async fn apply_damage(stores: &Stores, id: &str, donor: &str, damage: &Damage) {
    apply_damage_at(stores, id, donor, damage, 30).await;
}

/// [`apply_damage`] aimed at the snapshot at `version` instead of 30 (the event before it
/// instead of 29).
async fn apply_damage_at(stores: &Stores, id: &str, donor: &str, damage: &Damage, version: u64) {
    let retarget = |sql: &str| {
        sql.replace("{AT_30}", AT_30)
            .replace("version = 29", &format!("version = {}", version - 1))
            .replace("version = 30", &format!("version = {version}"))
    };
    match damage {
        Damage::Sql(sql) => {
            let sql = retarget(sql).replace("{DONOR}", donor);
            let done = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(id)
                .execute(&stores.pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(done.rows_affected() > 0, "{sql} changed nothing");
        }
        Damage::ForeignBytes(bytes) => {
            let bytes = bytes();
            let compressed = bytes.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]);
            let uncompressed = if compressed {
                zstd::bulk::decompress(&bytes, 1 << 20).unwrap().len()
            } else {
                bytes.len()
            };
            sqlx::query(sqlx::AssertSqlSafe(retarget(
                "UPDATE snapshots SET bytes = $2, checksum = $3, stored_size = $4, \
                 uncompressed_size = $5, compression = $6 WHERE {AT_30}",
            )))
            .bind(id)
            .bind(&bytes)
            .bind(codec::checksum(&bytes) as i64)
            .bind(bytes.len() as i64)
            .bind(uncompressed as i64)
            .bind(if compressed { "zstd" } else { "none" })
            .execute(&stores.pool)
            .await
            .unwrap();
        }
    }
}

/// Checks one damaged wallet through a fresh executor; returns what went wrong, if anything.
async fn check(stores: &Stores, id: &str, case: &Case) -> Result<(), String> {
    let expected: WalletState = fold(
        read_wallet(&*stores.events, id)
            .await?
            .iter()
            .map(|s| &s.event),
    );
    let reader = reading_executor(Arc::clone(&stores.events), Arc::clone(&stores.snapshots));
    let view = reader.state::<Wallet>(id).await;
    let stats = reader.stats_of::<Wallet>().unwrap().aggregate;
    reader.shutdown().await;
    let view = view.map_err(|e| format!("activation failed: {e}"))?;
    let mut problems = Vec::new();
    if view.state != expected || view.version != 35 {
        problems.push(format!(
            "wrong state at version {}: {:?}, expected {expected:?}",
            view.version, view.state
        ));
    }
    if view.activation.snapshot_version() != case.expect_from {
        problems.push(format!(
            "started from snapshot {:?}, expected {:?}",
            view.activation.snapshot_version(),
            case.expect_from
        ));
    }
    if view.activation.snapshots_skipped != case.expect_skipped
        || stats.snapshots_skipped_invalid != u64::from(case.expect_skipped)
    {
        problems.push(format!(
            "skipped {} (counter snapshots_skipped_invalid = {}), expected {}",
            view.activation.snapshots_skipped, stats.snapshots_skipped_invalid, case.expect_skipped
        ));
    }
    let expected_replay = 35 - case.expect_from.unwrap_or(0);
    if view.activation.events_replayed != expected_replay {
        problems.push(format!(
            "replayed {} events, expected {expected_replay}",
            view.activation.events_replayed
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_snapshot_damage_done_in_sql_is_detected_counted_and_skipped() {
    let Some(stores) = stores().await else { return };
    let started = Instant::now();
    let cases = cases();
    let mut failures = Vec::new();
    let (mut tried, mut detected) = (0, 0);
    for compress in [false, true] {
        let mode = if compress { "zstd" } else { "raw" };
        let donor = format!("donor-{mode}");
        history(&stores, &donor, compress).await;
        for (n, case) in cases.iter().enumerate() {
            let id = format!("case-{n}-{mode}");
            history(&stores, &id, compress).await;
            apply_damage(&stores, &id, &donor, &case.damage).await;
            let is_corruption = case.expect_skipped > 0;
            tried += usize::from(is_corruption);
            match check(&stores, &id, case).await {
                Ok(()) => detected += usize::from(is_corruption),
                Err(problem) => failures.push(format!("{} ({id}): {problem}", case.name)),
            }
        }
    }
    eprintln!(
        "snapshot_faults: corruption cases detected {detected} of {tried} tried ({} cases with \
         deletions); {:.1?}",
        cases.len() * 2 - tried,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n  - {}",
        failures.len(),
        failures.join("\n  - ")
    );
}

/// Where activation should start, and how many snapshots it should skip, when `case` damages
/// the base (at 10) of the deltas at 20 and 30; `None` for the cases that are not about one
/// snapshot. A delta needs only its base's bytes (as its recorded checksum says): damage to the
/// base's schema version or `last_event_id` leaves them usable, and the delta's own are checked.
/// Any other damage invalidates both deltas and the base itself.
fn base_damage_outcome(case: &Case) -> Option<(Option<u64>, u32)> {
    match case.name {
        "every snapshot deleted" | "every snapshot damaged" | "newest deleted, next damaged" => {
            None
        }
        "newest snapshot deleted" => Some((None, 2)),
        "state schema version bumped"
        | "state schema version negative"
        | "last_event_id random"
        | "last_event_id of the event before" => Some((Some(30), 0)),
        _ => Some((None, 3)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_damage_done_in_sql_to_a_delta_or_its_base_falls_back_as_far_as_needed() {
    let Some(stores) = stores().await else { return };
    let started = Instant::now();
    let donor = "donor-delta";
    incremental_history(&stores, donor).await;
    let mut failures = Vec::new();
    let mut tried = 0;
    for (n, case) in cases().iter().enumerate() {
        // The newest delta: falls back exactly as a full snapshot does.
        let id = format!("delta-case-{n}");
        incremental_history(&stores, &id).await;
        apply_damage_at(&stores, &id, donor, &case.damage, 30).await;
        tried += 1;
        if let Err(problem) = check(&stores, &id, case).await {
            failures.push(format!("{} at the delta ({id}): {problem}", case.name));
        }
        // The base both deltas were written against.
        let Some((expect_from, expect_skipped)) = base_damage_outcome(case) else {
            continue;
        };
        let id = format!("base-case-{n}");
        incremental_history(&stores, &id).await;
        apply_damage_at(&stores, &id, donor, &case.damage, 10).await;
        tried += 1;
        let at_base = Case {
            name: case.name,
            damage: Damage::Sql(""),
            expect_from,
            expect_skipped,
        };
        if let Err(problem) = check(&stores, &id, &at_base).await {
            failures.push(format!("{} at the base ({id}): {problem}", case.name));
        }
    }
    eprintln!(
        "snapshot_faults: {tried} damages to deltas and bases; {:.1?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n  - {}",
        failures.len(),
        failures.join("\n  - ")
    );
}

/// A snapshot pool that can never connect: every save and load fails after `acquire`.
fn unreachable_snapshots(acquire: Duration) -> Arc<dyn SnapshotStore> {
    let pool = PgPoolOptions::new()
        .acquire_timeout(acquire)
        .connect_lazy(&closed_port_url())
        .unwrap();
    Arc::new(PgSnapshotStore::with_migrated_pool(
        pool,
        StoreLimits::default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_snapshot_store_fails_no_command_and_every_state_comes_from_the_events() {
    let Some(stores) = stores().await else { return };
    // A command that waited for the snapshot store would take this long; one slowed by a busy
    // machine stays well under it.
    const ACQUIRE: Duration = Duration::from_millis(1_200);
    let failing = unreachable_snapshots(ACQUIRE);
    let executor = Executor::builder(Arc::clone(&stores.events), Arc::clone(&failing))
        .register::<Wallet>(AggregateSettings::new().strategy(EveryNEvents::new(2)))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let executor = executor.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("unreachable-{n}");
            let mut slowest = Duration::ZERO;
            for i in 0..20 {
                let started = Instant::now();
                let done = executor
                    .execute::<Wallet>(&id, WalletCommand::deposit(i + 1))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{id}: a snapshot store failure failed a command: {e}")
                    });
                assert_eq!(done.version, i as u64 + 1);
                // The first command activates, which asks the snapshot store once.
                if i > 0 {
                    slowest = slowest.max(started.elapsed());
                }
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.unwrap());
    }
    assert!(
        slowest < ACQUIRE,
        "a command waited for the snapshot store (slowest {slowest:?}, acquire timeout {ACQUIRE:?})"
    );
    let on_demand = executor.snapshot_now::<Wallet>("unreachable-0").await;
    assert!(
        matches!(on_demand, Err(ExecutorError::Store(_))),
        "a snapshot on demand reports the failure: {on_demand:?}"
    );
    executor.flush_snapshots().await;
    let stats = executor.stats_of::<Wallet>().unwrap().aggregate;
    executor.shutdown().await;
    assert_eq!(stats.commands_succeeded, 160);
    assert_eq!(stats.snapshots_taken, 0);
    assert!(
        stats.snapshots_failed > 0,
        "failed snapshot writes are counted: {stats:?}"
    );

    // Activation with snapshot lookups failing: a full replay, the right state.
    let streams = read_all_wallets(&stores.pool, &*stores.events)
        .await
        .unwrap();
    assert_eq!(streams.len(), 8);
    // Its own unreachable store, quick to fail: what it proves does not depend on the wait.
    let reader = reading_executor(
        Arc::clone(&stores.events),
        unreachable_snapshots(Duration::from_millis(100)),
    );
    assert_states_equal_fold(&reader, &streams).await;
    let reader_stats = reader.stats_of::<Wallet>().unwrap().aggregate;
    reader.shutdown().await;
    assert_eq!(reader_stats.events_replayed, 160, "full replays");
    eprintln!(
        "snapshot_faults: unreachable snapshot store: 160 commands acknowledged, {} snapshot \
         writes failed and counted, slowest command {slowest:?}",
        stats.snapshots_failed
    );
}

const PROBE: &str = env!("CARGO_BIN_EXE_snapshot_probe");

/// The recorded uncompressed size is a column next to the checksummed bytes, not covered by the
/// checksum. A corrupt one must be skipped like any other damage. Activation runs in a probe
/// process: if it tries to allocate the recorded size, that process aborts, not this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_row_claiming_an_absurd_uncompressed_size_is_skipped_not_fatal() {
    let Some(stores) = stores().await else { return };
    let url = stores._database.url().to_owned();
    let mut failures = Vec::new();
    for compress in [false, true] {
        for size in [1i64 << 40, i64::MAX] {
            let id = format!("absurd-{size}-{compress}");
            history(&stores, &id, compress).await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE snapshots SET uncompressed_size = $2 WHERE {AT_30}"
            )))
            .bind(&id)
            .bind(size)
            .execute(&stores.pool)
            .await
            .unwrap();
            let (url, probe_id) = (url.clone(), id.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                integration_tests::run_probe(PROBE, &["activate", &url, &probe_id])
            })
            .await
            .unwrap();
            match outcome {
                Ok(out) if out == "state version=35 from=20 skipped=1" => {}
                Ok(out) => failures.push(format!("{id}: {out}")),
                Err(died) => failures.push(format!("{id}: {died}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "activating an aggregate whose newest snapshot records an absurd size:\n  - {}",
        failures.join("\n  - ")
    );
}
