//! The snapshot schedule contract (`event_stores::contract::schedules`) on both backends.

use std::sync::Arc;

use event_stores::contract::schedules as cases;
use event_stores::testing::{TestDatabase, fresh_database};
use event_stores::{InMemoryScheduleStore, ScheduleStore};

/// A fresh PostgreSQL schedule store (its database kept alive with it), or None when
/// PostgreSQL tests are skipped.
async fn postgres() -> Option<(Arc<dyn ScheduleStore>, TestDatabase)> {
    let database = fresh_database().await?;
    let (events, _) = database
        .stores(event_stores::StoreLimits::default())
        .await
        .unwrap();
    let store = event_stores::PgScheduleStore::new(events.pool().clone());
    Some((Arc::new(store), database))
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    cases::$case(Arc::new(InMemoryScheduleStore::new())).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let Some((store, _database)) = super::postgres().await else { return };
                    cases::$case(store).await;
                }
            )*
        }
    };
}

on_both_backends!(
    schedules_read_back_replace_by_name_and_come_due_earliest_first,
    one_claim_wins_each_occurrence_and_counts_the_run,
    a_malformed_schedule_is_refused_and_stores_nothing,
);
