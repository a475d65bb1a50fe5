//! Snapshot schedules run by the node's scheduler: over 100 runs on time (≥ 99 %) on both
//! backends, a type schedule that snapshots only the aggregates with new events, a run missed
//! while no node was up that runs once at start, a schedule with no later occurrence parked after
//! its last run, each occurrence run once by two schedulers on one store, and cron expressions
//! refused with typed errors.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Ledger, LedgerCommand, Stores, memory};
use aggregate_actors::event_stores::{
    InMemoryScheduleStore, ScheduleStore, StoredSchedule, StreamId,
};
use aggregate_actors::schedule::{ScheduleError, Schedules, SnapshotSchedule};
use aggregate_actors::scheduler::{Scheduler, SchedulerSettings, SchedulerStats};
use aggregate_actors::{AggregateSettings, Executor, Retention};
use chrono::Utc;

fn executor(stores: &Stores) -> Executor {
    let settings = AggregateSettings::<Ledger>::new()
        .strategy(aggregate_actors::strategy::Never)
        .snapshot_on_passivation(false)
        .retention(Retention {
            keep_newest: 100,
            max_age: None,
        });
    Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Ledger>(settings)
        .build()
        .unwrap()
}

fn settings(store: &Arc<dyn ScheduleStore>) -> SchedulerSettings {
    SchedulerSettings {
        poll_interval: Duration::from_millis(100),
        schedules: Some(Arc::clone(store)),
        ..SchedulerSettings::default()
    }
}

async fn newest_snapshot(stores: &Stores, id: &str) -> Option<u64> {
    let stream = StreamId::new("ledger", id).unwrap();
    stores
        .snapshots
        .load_latest(&stream)
        .await
        .unwrap()
        .map(|s| s.version)
}

/// Runs of every stored schedule, and how many of them were on time.
async fn runs(store: &Arc<dyn ScheduleStore>) -> (u64, u64) {
    let all = store.schedules().await.unwrap();
    (
        all.iter().map(|s| s.runs).sum(),
        all.iter().map(|s| s.runs_on_time).sum(),
    )
}

async fn over_100_runs_on_time(stores: Stores, store: Arc<dyn ScheduleStore>) {
    let executor = executor(&stores);
    let schedules = Schedules::new(Arc::clone(&store));
    // Running before the schedules are put: a slow setup must not make first runs late.
    let scheduler = Scheduler::start(executor.clone(), settings(&store));
    for i in 0..40 {
        let id = format!("s-{i}");
        executor
            .execute::<Ledger>(&id, LedgerCommand::Add(1))
            .await
            .unwrap();
        let every_second = SnapshotSchedule::for_aggregate::<Ledger>(
            format!("every-second-{i}"),
            &id,
            "* * * * * *",
        )
        .unwrap();
        schedules.put(every_second).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while runs(&store).await.0 < 120 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            runs(&store).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats: SchedulerStats = scheduler.stats();
    scheduler.stop().await;
    let (total, on_time) = runs(&store).await;
    let rate = on_time as f64 / total as f64;
    println!(
        "{}: {total} scheduled runs, {on_time} on time ({:.2} %), scheduler: {} runs, {} failed",
        stores.name,
        rate * 100.0,
        stats.schedule_runs,
        stats.schedule_runs_failed
    );
    assert!(total >= 100);
    assert!(rate >= 0.99, "on-time rate {rate}");
    assert_eq!(stats.schedule_runs_failed, 0);
    for i in 0..40 {
        assert_eq!(newest_snapshot(&stores, &format!("s-{i}")).await, Some(1));
    }
    let listed = schedules.list().await.unwrap();
    assert!(
        listed
            .iter()
            .all(|s| s.next_run_at > Utc::now() - chrono::Duration::seconds(2))
    );
    assert!(
        listed.iter().all(|s| s
            .last_outcome
            .as_deref()
            .is_some_and(|o| o.contains("failed 0"))),
        "{:?}",
        listed[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_100_scheduled_runs_start_on_time_at_least_99_percent_in_memory() {
    over_100_runs_on_time(memory(), Arc::new(InMemoryScheduleStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_100_scheduled_runs_start_on_time_at_least_99_percent_on_postgres() {
    let Some(stores) = crate::common::postgres().await else {
        return;
    };
    let store = Arc::new(aggregate_actors::event_stores::PgScheduleStore::new(
        stores.pool().unwrap(),
    ));
    over_100_runs_on_time(stores, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_schedule_snapshots_only_the_aggregates_with_new_events() {
    let stores = memory();
    let executor = executor(&stores);
    for id in ["a", "b", "c"] {
        executor
            .execute::<Ledger>(id, LedgerCommand::Add(1))
            .await
            .unwrap();
    }
    let store: Arc<dyn ScheduleStore> = Arc::new(InMemoryScheduleStore::new());
    Schedules::new(Arc::clone(&store))
        .put(SnapshotSchedule::for_type::<Ledger>("ledgers", "* * * * * *").unwrap())
        .await
        .unwrap();
    let scheduler = Scheduler::start(executor.clone(), settings(&store));
    let wait_for_runs = |n: u64| {
        let store = Arc::clone(&store);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while runs(&store).await.0 < n {
                assert!(tokio::time::Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for_runs(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in ["a", "b", "c"] {
        assert_eq!(newest_snapshot(&stores, id).await, Some(1));
    }
    executor
        .execute::<Ledger>("b", LedgerCommand::Add(1))
        .await
        .unwrap();
    let before = runs(&store).await.0;
    wait_for_runs(before + 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    scheduler.stop().await;
    assert_eq!(newest_snapshot(&stores, "b").await, Some(2));
    let outcome = store.schedules().await.unwrap()[0].last_outcome.clone();
    assert_eq!(
        outcome
            .as_deref()
            .map(|o| o.starts_with("snapshotted 1, already current 2")),
        Some(true),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_missed_while_no_node_was_up_runs_once_at_start_and_counts_as_late() {
    let stores = memory();
    let executor = executor(&stores);
    executor
        .execute::<Ledger>("m", LedgerCommand::Add(1))
        .await
        .unwrap();
    let store: Arc<dyn ScheduleStore> = Arc::new(InMemoryScheduleStore::new());
    // Due every 1 January, last due ten years ago: ten occurrences missed. (Yearly, so that no
    // new occurrence falls due while the test runs, as a minute boundary could.)
    store
        .put_schedule(StoredSchedule {
            name: "missed".to_owned(),
            aggregate_type: "ledger".to_owned(),
            aggregate_id: Some("m".to_owned()),
            cron: "0 0 0 1 1 *".to_owned(),
            next_run_at: Utc::now() - chrono::Duration::days(3_653),
            last_run_at: None,
            last_outcome: None,
            runs: 0,
            runs_on_time: 0,
        })
        .await
        .unwrap();
    let scheduler = Scheduler::start(executor.clone(), settings(&store));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while runs(&store).await.0 == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    scheduler.stop().await;
    let stored = store.schedules().await.unwrap().remove(0);
    assert_eq!((stored.runs, stored.runs_on_time), (1, 0), "once, late");
    assert!(stored.next_run_at > Utc::now(), "the next is in the future");
    assert_eq!(newest_snapshot(&stores, "m").await, Some(1));
}

async fn last_occurrence_then_never_due(stores: Stores, store: Arc<dyn ScheduleStore>) {
    let executor = executor(&stores);
    executor
        .execute::<Ledger>("last", LedgerCommand::Add(1))
        .await
        .unwrap();
    // Its only year is long past, and it is due: its last occurrence was missed. (Stored as a
    // store may hold it; `Schedules::put` refuses such an expression.)
    store
        .put_schedule(StoredSchedule {
            name: "last".to_owned(),
            aggregate_type: "ledger".to_owned(),
            aggregate_id: Some("last".to_owned()),
            cron: "0 0 0 1 1 * 2001".to_owned(),
            next_run_at: Utc::now() - chrono::Duration::seconds(1),
            last_run_at: None,
            last_outcome: None,
            runs: 0,
            runs_on_time: 0,
        })
        .await
        .unwrap();
    let scheduler = Scheduler::start(executor.clone(), settings(&store));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while runs(&store).await.0 == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    scheduler.stop().await;
    let stored = store.schedules().await.unwrap().remove(0);
    assert_eq!(stored.runs, 1, "{stored:?}");
    assert_eq!(newest_snapshot(&stores, "last").await, Some(1), "it ran");
    let in_100_000_years = Utc::now() + chrono::Duration::days(365 * 100_000);
    assert!(
        store
            .due_schedules(in_100_000_years, 10)
            .await
            .unwrap()
            .is_empty(),
        "never due again, not retried every hour: {stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_with_no_later_occurrence_runs_its_last_then_is_never_due_again_in_memory() {
    last_occurrence_then_never_due(memory(), Arc::new(InMemoryScheduleStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_with_no_later_occurrence_runs_its_last_then_is_never_due_again_on_postgres() {
    let Some(stores) = crate::common::postgres().await else {
        return;
    };
    let store = Arc::new(aggregate_actors::event_stores::PgScheduleStore::new(
        stores.pool().unwrap(),
    ));
    last_occurrence_then_never_due(stores, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_store_run_each_occurrence_once() {
    let stores = memory();
    let (first, second) = (executor(&stores), executor(&stores));
    first
        .execute::<Ledger>("x", LedgerCommand::Add(1))
        .await
        .unwrap();
    let store: Arc<dyn ScheduleStore> = Arc::new(InMemoryScheduleStore::new());
    Schedules::new(Arc::clone(&store))
        .put(SnapshotSchedule::for_aggregate::<Ledger>("x", "x", "* * * * * *").unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let a = Scheduler::start(first, settings(&store));
    let b = Scheduler::start(second, settings(&store));
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    // The store counts a run when it is claimed, a scheduler when it has finished: compare
    // them between two runs, not while one is under way.
    let deadline = started + Duration::from_secs(8);
    let (ran, stored) = loop {
        let ran = a.stats().schedule_runs + b.stats().schedule_runs;
        let stored = runs(&store).await.0;
        if ran == stored || std::time::Instant::now() > deadline {
            break (ran, stored);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let seconds = started.elapsed().as_secs();
    a.stop().await;
    b.stop().await;
    assert_eq!(ran, stored, "every run counted once");
    assert!(
        (3..=seconds + 1).contains(&stored),
        "one run per second: {stored} in {seconds} s"
    );
}

#[test]
fn bad_cron_expressions_are_refused_with_typed_errors() {
    let bad = SnapshotSchedule::for_type::<Ledger>("bad", "every tuesday");
    assert!(matches!(bad, Err(ScheduleError::Cron { .. })), "{bad:?}");
    let empty_id = SnapshotSchedule::for_aggregate::<Ledger>("id", "", "* * * * * *");
    assert!(matches!(empty_id, Err(ScheduleError::InvalidInput(_))));
}

#[tokio::test]
async fn a_cron_expression_that_never_fires_again_is_refused() {
    let schedules = Schedules::new(Arc::new(InMemoryScheduleStore::new()));
    let past = SnapshotSchedule::for_type::<Ledger>("past", "0 0 0 1 1 * 2001").unwrap();
    assert!(matches!(
        schedules.put(past).await,
        Err(ScheduleError::NeverRuns { .. })
    ));
    assert!(schedules.list().await.unwrap().is_empty());
}
