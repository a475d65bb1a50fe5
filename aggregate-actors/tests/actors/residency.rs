//! Tiered residency: an actor that stops for idleness or eviction leaves its aggregate resident
//! (state, version and bookkeeping in a compact entry, no actor), the next message promotes it
//! with no store read, a byte budget demotes the least recently used to cold after a snapshot,
//! and every transition keeps exactly one writer per id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{CountingReads, Ledger, LedgerCommand, Stores, fold, stored_events};
use aggregate_actors::event_stores::EventStore;
use aggregate_actors::strategy::Never;
use aggregate_actors::{
    AggregateSettings, CommandId, CommandOptions, Executor, ResidentConfig, RuntimeConfig,
};

fn settings(resident: ResidentConfig, runtime: RuntimeConfig) -> AggregateSettings<Ledger> {
    AggregateSettings::new()
        .strategy(Never)
        .resident(resident)
        .runtime(runtime)
}

fn executor_on(
    events: Arc<dyn EventStore>,
    stores: &Stores,
    s: AggregateSettings<Ledger>,
) -> Executor {
    Executor::builder(events, Arc::clone(&stores.snapshots))
        .register::<Ledger>(s)
        .build()
        .unwrap()
}

/// An executor whose actors passivate after `idle_ms` without traffic.
fn idle_executor(
    events: Arc<dyn EventStore>,
    stores: &Stores,
    tier: ResidentConfig,
    idle_ms: u64,
) -> Executor {
    let runtime = RuntimeConfig {
        idle_timeout: Some(Duration::from_millis(idle_ms)),
        ..RuntimeConfig::default()
    };
    executor_on(events, stores, settings(tier, runtime))
}

/// The idle timeout of tests that count transitions: long enough that a stalled test task
/// (a slow store read, a busy machine: stalls of several hundred milliseconds happen on a
/// loaded 2-core CI machine) does not send an aggregate back to the tier between two of its
/// steps, which would add a promotion the test does not expect. Each of these tests waits
/// about this long once, for its aggregate to go idle.
const SETTLED_IDLE_MS: u64 = 1_000;

/// Waits until `done` holds for the executor's statistics (at most 10 s).
async fn until(
    executor: &Executor,
    what: &str,
    done: impl Fn(&aggregate_actors::TypeStats) -> bool,
) {
    for _ in 0..1_000 {
        if done(&executor.stats_of::<Ledger>().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: {:?}", executor.stats_of::<Ledger>().unwrap());
}

/// A tier that keeps every state encoded, however small.
fn encoding_every_state(budget_bytes: usize) -> ResidentConfig {
    ResidentConfig {
        decoded_max_bytes: 0,
        ..ResidentConfig::with_budget(budget_bytes)
    }
}

async fn an_idle_aggregate_goes_resident_with_its_small_state_decoded_and_its_next_command_reads_no_store(
    stores: Stores,
) {
    idle_aggregate_goes_resident_and_promotes_without_a_read(stores, ResidentConfig::default(), 0)
        .await;
}

async fn an_idle_aggregate_kept_encoded_goes_resident_and_its_next_command_reads_no_store(
    stores: Stores,
) {
    let tier = encoding_every_state(ResidentConfig::default().budget_bytes);
    idle_aggregate_goes_resident_and_promotes_without_a_read(stores, tier, 1).await;
}

/// `encoded`: how many entries the tier should hold encoded once the aggregate is resident.
async fn idle_aggregate_goes_resident_and_promotes_without_a_read(
    stores: Stores,
    tier: ResidentConfig,
    encoded: usize,
) {
    let counting = CountingReads::wrap(&stores.events);
    let executor = idle_executor(counting.clone(), &stores, tier, SETTLED_IDLE_MS);
    for amount in [1, 2, 3] {
        executor
            .execute::<Ledger>("idle", LedgerCommand::Add(amount))
            .await
            .unwrap();
    }
    until(&executor, "idle actor went resident", |s| {
        s.resident.entries == 1 && s.runtime.live == 0
    })
    .await;
    assert_eq!(
        executor.stats_of::<Ledger>().unwrap().resident.encoded,
        encoded,
        "the state's form in its entry"
    );
    let reads_before = counting.reads();

    let committed = executor
        .execute::<Ledger>("idle", LedgerCommand::Add(4))
        .await
        .unwrap();
    assert_eq!(committed.version, 4);
    assert_eq!(counting.reads(), reads_before, "promotion read no store");
    let view = executor.state::<Ledger>("idle").await.unwrap();
    assert!(view.activation.from_resident, "{:?}", view.activation);
    assert_eq!(view.activation.events_replayed, 0);
    assert_eq!(
        view.state,
        fold(&stored_events(&*stores.events, "idle").await)
    );
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert_eq!(stats.resident.promotions, 1);
    assert_eq!(stats.resident.entries, 0, "promotion took the entry out");
    assert_eq!(stats.runtime.activations, 2);
    assert_eq!(stats.aggregate.activations_without_read, 1);
    assert!(stats.resident.bytes == 0);
    assert!(
        stores.snapshot_versions("idle").await.is_empty(),
        "resident, not snapshotted"
    );
}

async fn a_retry_after_promotion_is_answered_from_the_window_the_entry_kept(stores: Stores) {
    let counting = CountingReads::wrap(&stores.events);
    let executor = idle_executor(
        counting.clone(),
        &stores,
        ResidentConfig::default(),
        SETTLED_IDLE_MS,
    );
    let id = CommandId::new();
    let first = executor
        .execute_with::<Ledger>(
            "retry",
            LedgerCommand::Add(5),
            CommandOptions::new().command_id(id),
        )
        .await
        .unwrap();
    executor
        .execute::<Ledger>("retry", LedgerCommand::Add(6))
        .await
        .unwrap();
    until(&executor, "went resident", |s| {
        s.resident.entries == 1 && s.runtime.live == 0
    })
    .await;

    let retried = executor
        .execute_with::<Ledger>(
            "retry",
            LedgerCommand::Add(5),
            CommandOptions::new().command_id(id),
        )
        .await
        .unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.version, first.version);
    assert_eq!(
        stored_events(&*stores.events, "retry").await.len(),
        2,
        "nothing stored twice"
    );
    assert_eq!(
        executor.stats_of::<Ledger>().unwrap().resident.promotions,
        1
    );
}

async fn over_its_budget_the_tier_demotes_the_least_recently_used_to_cold_after_a_snapshot(
    stores: Stores,
) {
    budget_demotes_the_least_recently_used_after_a_snapshot(stores, ResidentConfig::with_budget)
        .await;
}

async fn entries_kept_encoded_are_demoted_after_a_snapshot_of_the_bytes_they_hold(stores: Stores) {
    budget_demotes_the_least_recently_used_after_a_snapshot(stores, encoding_every_state).await;
}

/// `tier`: the tier for a budget in bytes (states kept decoded or encoded).
async fn budget_demotes_the_least_recently_used_after_a_snapshot(
    stores: Stores,
    tier: fn(usize) -> ResidentConfig,
) {
    // A cap of 4 live actors sends 60 aggregates through eviction into a tier with room for
    // about 16 of them (16 shards, each with room for one or two small entries).
    let budget = 16 * 700;
    let runtime = RuntimeConfig {
        max_live_actors: Some(4),
        idle_timeout: None,
        ..RuntimeConfig::default()
    };
    let executor = executor_on(
        Arc::clone(&stores.events),
        &stores,
        settings(tier(budget), runtime),
    );
    // Each command's id is known, so a retry after demotion can check the window survived.
    let command_id = |n: usize, round: i64| CommandId::from_key(&format!("acc-{n}/{round}"));
    for round in 1..=2 {
        for n in 0..60 {
            executor
                .execute_with::<Ledger>(
                    &format!("acc-{n}"),
                    LedgerCommand::Add(round),
                    CommandOptions::new().command_id(command_id(n, round)),
                )
                .await
                .unwrap();
        }
    }
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert!(stats.runtime.evictions >= 56, "{stats:?}");
    // The entries are in the form the tier asked for.
    assert!(stats.resident.entries > 0, "{:?}", stats.resident);
    let expected_encoded = if tier(budget).decoded_max_bytes == 0 {
        stats.resident.entries
    } else {
        0
    };
    assert_eq!(
        stats.resident.encoded, expected_encoded,
        "{:?}",
        stats.resident
    );
    assert!(stats.resident.bytes <= budget, "{:?}", stats.resident);
    assert!(stats.resident.demotions > 0, "{:?}", stats.resident);
    assert_eq!(
        stats.resident.demotion_snapshots, stats.resident.demotions,
        "every demoted aggregate was ahead of its snapshot"
    );
    executor.flush_snapshots().await;
    // Demoted aggregates are cold now: their next command starts from that snapshot.
    let mut from_snapshot = 0;
    for n in 0..60 {
        let id = format!("acc-{n}");
        if stores.snapshot_versions(&id).await.is_empty() {
            continue;
        }
        let view = executor.state::<Ledger>(&id).await.unwrap();
        if !view.activation.from_resident && view.activation.snapshot_version().is_some() {
            assert_eq!(
                view.activation.events_replayed,
                view.version - view.activation.snapshot_version().unwrap()
            );
            from_snapshot += 1;
            // The demotion snapshot carried the recent commands: a retry is a duplicate.
            let retried = executor
                .execute_with::<Ledger>(
                    &id,
                    LedgerCommand::Add(2),
                    CommandOptions::new().command_id(command_id(n, 2)),
                )
                .await
                .unwrap();
            assert!(retried.duplicate, "{id}: the retry was applied again");
            assert_eq!(retried.version, view.version);
        }
        assert_eq!(view.state, fold(&stored_events(&*stores.events, &id).await));
    }
    assert!(
        from_snapshot > 0,
        "some cold aggregate started from its demotion snapshot"
    );
    executor.flush_snapshots().await;
    let demotion_snapshots = executor
        .stats_of::<Ledger>()
        .unwrap()
        .resident
        .demotion_snapshots;
    if let Some(pool) = stores.pool() {
        // Every snapshot the demotions wrote (the writer keeps only the newest of a stream's
        // queued ones) sits at a stored version, with that version's event id (raw SQL).
        let (snapshots, matching): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(e.event_id) FROM snapshots s LEFT JOIN events e \
             ON e.aggregate_type = s.aggregate_type AND e.aggregate_id = s.aggregate_id \
             AND e.version = s.version AND e.event_id = s.last_event_id \
             WHERE s.aggregate_type = 'ledger'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(snapshots > 0 && snapshots as u64 <= demotion_snapshots);
        assert_eq!(
            matching, snapshots,
            "snapshots at stored versions and event ids"
        );
    }
}

async fn shutdown_snapshots_every_resident_aggregate_ahead_of_its_snapshot(stores: Stores) {
    let executor = idle_executor(
        Arc::clone(&stores.events),
        &stores,
        ResidentConfig::default(),
        30,
    );
    for n in 0..10 {
        executor
            .execute::<Ledger>(&format!("s-{n}"), LedgerCommand::AddMany(vec![1, 2]))
            .await
            .unwrap();
    }
    until(&executor, "all resident", |s| {
        s.resident.entries == 10 && s.runtime.live == 0
    })
    .await;
    executor.shutdown().await;
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert_eq!(stats.resident.entries, 0);
    assert_eq!(stats.resident.demotion_snapshots, 10);
    for n in 0..10 {
        assert_eq!(stores.snapshot_versions(&format!("s-{n}")).await, vec![2]);
    }
}

/// Commands race the transitions: 16 callers on 48 ids with a cap of 6 live actors, an idle
/// timeout of a few milliseconds and a budget for a handful of residents, so ids go hot →
/// resident → cold and back all the time while others' commands queue for them. Every
/// acknowledged command is stored exactly once at its acknowledged version, versions are
/// contiguous, no append ever conflicted (a second writer or a stale resident would), and each
/// final state is the fold of the stored events.
async fn commands_racing_promotion_and_demotion_keep_one_writer_per_id(stores: Stores) {
    let runtime = RuntimeConfig {
        max_live_actors: Some(6),
        idle_timeout: Some(Duration::from_millis(3)),
        ..RuntimeConfig::default()
    };
    let executor = executor_on(
        Arc::clone(&stores.events),
        &stores,
        settings(ResidentConfig::with_budget(16 * 1_200), runtime),
    );
    let workers: Vec<_> = (0..16u64)
        .map(|w| {
            let executor = executor.clone();
            tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut x = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for i in 0..150 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = format!("race-{}", x % 48);
                    let amount = (w * 1_000 + i) as i64;
                    let committed = executor
                        .execute::<Ledger>(&id, LedgerCommand::Add(amount))
                        .await
                        .unwrap();
                    acks.push((id, committed.version, amount));
                    if i % 25 == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                acks
            })
        })
        .collect();
    let mut acked: HashMap<String, Vec<(u64, i64)>> = HashMap::new();
    for worker in workers {
        for (id, version, amount) in worker.await.unwrap() {
            acked.entry(id).or_default().push((version, amount));
        }
    }
    let stats = executor.stats_of::<Ledger>().unwrap();
    eprintln!(
        "race: {} activations ({} promotions), {} evictions, {} passivations, {} demotions",
        stats.runtime.activations,
        stats.resident.promotions,
        stats.runtime.evictions,
        stats.runtime.passivations,
        stats.resident.demotions
    );
    assert_eq!(stats.aggregate.conflicts, 0, "one writer per id: {stats:?}");
    assert!(stats.resident.promotions > 0, "{:?}", stats.resident);
    assert!(stats.resident.demotions > 0, "{:?}", stats.resident);
    assert!(stats.runtime.evictions + stats.runtime.passivations > 0);
    for (id, mut acks) in acked {
        acks.sort_unstable();
        let stored = executor
            .event_store()
            .read_stream(
                &crate::common::stream(&id),
                aggregate_actors::event_stores::ReadQuery::all(),
            )
            .await
            .unwrap();
        assert_eq!(
            stored.len(),
            acks.len(),
            "{id}: each acknowledged command stored once"
        );
        let events = stored_events(&*stores.events, &id).await;
        for ((version, amount), (recorded, event)) in acks.iter().zip(stored.iter().zip(&events)) {
            assert_eq!(
                *version, recorded.version,
                "{id}: acknowledged at its stored version"
            );
            assert_eq!(
                event,
                &crate::common::LedgerEvent::Added { amount: *amount }
            );
        }
        let view = executor.state::<Ledger>(&id).await.unwrap();
        assert_eq!(view.state, fold(&events), "{id}");
        assert_eq!(view.version, acks.len() as u64);
    }
    if let Some(pool) = stores.pool() {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT aggregate_id, count(*), max(version) FROM events \
             WHERE aggregate_type = 'ledger' GROUP BY aggregate_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for (id, count, max) in rows {
            assert_eq!(
                count, max,
                "{id}: versions 1..=n with no gap or duplicate (raw SQL)"
            );
        }
    }
}

async fn a_state_larger_than_the_decoded_limit_is_kept_encoded_and_promotes_to_the_same_state(
    stores: Stores,
) {
    let executor = idle_executor(
        Arc::clone(&stores.events),
        &stores,
        ResidentConfig::default(),
        SETTLED_IDLE_MS,
    );
    let limit = ResidentConfig::default().decoded_max_bytes;
    for (id, note) in [("small", "n".to_owned()), ("large", "n".repeat(limit + 1))] {
        executor
            .execute::<Ledger>(id, LedgerCommand::Add(3))
            .await
            .unwrap();
        executor
            .execute::<Ledger>(id, LedgerCommand::Note(note))
            .await
            .unwrap();
    }
    until(&executor, "both resident", |s| {
        s.resident.entries == 2 && s.runtime.live == 0
    })
    .await;
    let resident = executor.stats_of::<Ledger>().unwrap().resident;
    assert_eq!(resident.encoded, 1, "only the large state encoded");
    assert!(
        resident.bytes > limit,
        "the large state is charged: {resident:?}"
    );
    for id in ["small", "large"] {
        let view = executor.state::<Ledger>(id).await.unwrap();
        assert!(view.activation.from_resident, "{id}: {:?}", view.activation);
        assert_eq!(view.state, fold(&stored_events(&*stores.events, id).await));
    }
    let resident = executor.stats_of::<Ledger>().unwrap().resident;
    assert_eq!(
        (resident.entries, resident.encoded, resident.bytes),
        (0, 0, 0)
    );
}

async fn passivating_all_actors_empties_the_resident_tier_too(stores: Stores) {
    let executor = idle_executor(
        Arc::clone(&stores.events),
        &stores,
        ResidentConfig::default(),
        30,
    );
    executor
        .execute::<Ledger>("p-1", LedgerCommand::Add(1))
        .await
        .unwrap();
    until(&executor, "resident", |s| s.resident.entries == 1).await;
    executor.passivate_all().await;
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert_eq!(stats.resident.entries, 0);
    assert_eq!(stats.resident.demotions, 1);
    let view = executor.state::<Ledger>("p-1").await.unwrap();
    assert!(!view.activation.from_resident);
}

async fn with_the_tier_off_a_stopped_actor_leaves_nothing_in_memory(stores: Stores) {
    let executor = idle_executor(
        Arc::clone(&stores.events),
        &stores,
        ResidentConfig::off(),
        30,
    );
    executor
        .execute::<Ledger>("off", LedgerCommand::Add(1))
        .await
        .unwrap();
    until(&executor, "passivated", |s| {
        s.runtime.passivations == 1 && s.runtime.live == 0
    })
    .await;
    let stats = executor.stats_of::<Ledger>().unwrap();
    assert_eq!(stats.resident.entries, 0);
    assert_eq!(stats.resident.kept, 0);
    let view = executor.state::<Ledger>("off").await.unwrap();
    assert!(!view.activation.from_resident);
}

on_both_backends! {
    idle_aggregate_goes_resident => an_idle_aggregate_goes_resident_with_its_small_state_decoded_and_its_next_command_reads_no_store;
    idle_aggregate_goes_resident_encoded => an_idle_aggregate_kept_encoded_goes_resident_and_its_next_command_reads_no_store;
    large_state_kept_encoded => a_state_larger_than_the_decoded_limit_is_kept_encoded_and_promotes_to_the_same_state;
    retry_after_promotion => a_retry_after_promotion_is_answered_from_the_window_the_entry_kept;
    budget_demotes_lru_after_snapshot => over_its_budget_the_tier_demotes_the_least_recently_used_to_cold_after_a_snapshot;
    budget_demotes_encoded_after_snapshot => entries_kept_encoded_are_demoted_after_a_snapshot_of_the_bytes_they_hold;
    shutdown_snapshots_residents => shutdown_snapshots_every_resident_aggregate_ahead_of_its_snapshot;
    racing_transitions_keep_one_writer => commands_racing_promotion_and_demotion_keep_one_writer_per_id;
    passivate_all_empties_the_tier => passivating_all_actors_empties_the_resident_tier_too;
    tier_off_keeps_nothing => with_the_tier_off_a_stopped_actor_leaves_nothing_in_memory;
}
