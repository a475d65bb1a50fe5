//! Contract cases for a [`ScheduleStore`]: each takes a fresh store (nothing else in it).

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};

use crate::{InvalidInput, ScheduleStore, StoreError, StoredSchedule};

/// A schedule named `name` of type "account", due at `next_run_at`, never run.
pub fn schedule(name: &str, next_run_at: DateTime<Utc>) -> StoredSchedule {
    StoredSchedule {
        name: name.to_owned(),
        aggregate_type: "account".to_owned(),
        aggregate_id: None,
        cron: "0 * * * * *".to_owned(),
        next_run_at: next_run_at.trunc_subsecs(6),
        last_run_at: None,
        last_outcome: None,
        runs: 0,
        runs_on_time: 0,
    }
}

/// Schedules read back with every field; putting a name again replaces it; delete removes it;
/// `due_schedules` gives those due by a time, earliest first, at most `limit`.
pub async fn schedules_read_back_replace_by_name_and_come_due_earliest_first(
    store: Arc<dyn ScheduleStore>,
) {
    let now = Utc::now().trunc_subsecs(6);
    let mut one = schedule("one", now + Duration::seconds(30));
    one.aggregate_id = Some("acc-1".to_owned());
    one.cron = "*/5 * * * * *".to_owned();
    store.put_schedule(one.clone()).await.unwrap();
    store
        .put_schedule(schedule("two", now - Duration::seconds(5)))
        .await
        .unwrap();
    store
        .put_schedule(schedule("three", now - Duration::seconds(10)))
        .await
        .unwrap();
    let listed = store.schedules().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["one", "three", "two"]
    );
    assert_eq!(listed[0], one, "every field read back");

    let due = store.due_schedules(now, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["three", "two"]
    );
    assert_eq!(store.due_schedules(now, 1).await.unwrap().len(), 1);

    let moved = schedule("three", now + Duration::hours(1));
    store.put_schedule(moved).await.unwrap();
    assert_eq!(store.due_schedules(now, 10).await.unwrap().len(), 1);
    assert!(store.delete_schedule("two").await.unwrap());
    assert!(!store.delete_schedule("two").await.unwrap());
    assert!(store.due_schedules(now, 10).await.unwrap().is_empty());
}

/// Of several claims of one occurrence, exactly one wins; it moves the schedule on and counts
/// the run; an outcome is recorded only for the run that started at the given time.
pub async fn one_claim_wins_each_occurrence_and_counts_the_run(store: Arc<dyn ScheduleStore>) {
    let due = Utc::now().trunc_subsecs(6) - Duration::seconds(1);
    let next = due + Duration::minutes(1);
    store.put_schedule(schedule("race", due)).await.unwrap();
    let claims = (0..8).map(|i| {
        let store = Arc::clone(&store);
        let started = due + Duration::milliseconds(i);
        tokio::spawn(async move {
            store
                .claim_schedule("race", due, next, started, i % 2 == 0)
                .await
                .unwrap()
        })
    });
    let mut won = 0;
    for claim in claims {
        won += u32::from(claim.await.unwrap());
    }
    assert_eq!(won, 1, "one claim per occurrence");
    let stored = store.schedules().await.unwrap().remove(0);
    assert_eq!((stored.next_run_at, stored.runs), (next, 1));
    let started = stored.last_run_at.unwrap();
    assert!(
        !store
            .claim_schedule("race", due, next, started, true)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_schedule("gone", due, next, started, true)
            .await
            .unwrap()
    );

    store
        .record_schedule_outcome("race", started - Duration::seconds(1), "an older run")
        .await
        .unwrap();
    assert_eq!(store.schedules().await.unwrap()[0].last_outcome, None);
    store
        .record_schedule_outcome("race", started, "snapshotted 3")
        .await
        .unwrap();
    assert_eq!(
        store.schedules().await.unwrap()[0].last_outcome.as_deref(),
        Some("snapshotted 3")
    );
}

/// An empty name, type or cron expression, or a NUL in one, is refused and stores nothing.
pub async fn a_malformed_schedule_is_refused_and_stores_nothing(store: Arc<dyn ScheduleStore>) {
    let now = Utc::now();
    let mut cases = Vec::new();
    let mut empty_name = schedule("", now);
    empty_name.name = " ".to_owned();
    cases.push(empty_name);
    let mut empty_cron = schedule("c", now);
    empty_cron.cron = String::new();
    cases.push(empty_cron);
    let mut nul_id = schedule("i", now);
    nul_id.aggregate_id = Some("a\0b".to_owned());
    cases.push(nul_id);
    cases.push(schedule(&"n".repeat(crate::MAX_SCHEDULE_NAME_LEN + 1), now));
    for case in cases {
        let refused = store.put_schedule(case.clone()).await;
        assert!(
            matches!(
                refused,
                Err(StoreError::InvalidInput(InvalidInput::Schedule { .. }))
            ),
            "{case:?}: {refused:?}"
        );
    }
    assert!(store.schedules().await.unwrap().is_empty());
}
