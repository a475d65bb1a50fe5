//! The executor on a node that serves only some ids (a cluster's shards): calls for other ids
//! are refused before anything activates or is stored, a key that moves away mid-life is
//! refused from then on, and the actors of a moving shard can be passivated by predicate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{Ledger, LedgerCommand, memory};
use aggregate_actors::{
    AggregateSettings, CommandError, Executor, ExecutorError, Placement, PlacementFactory,
};

/// Serves ids starting with "here-", and also "moving" while `moving_here` is set.
struct Prefix {
    moving_here: Arc<AtomicBool>,
}

impl Placement<String> for Prefix {
    fn is_local(&self, id: &String) -> bool {
        id.starts_with("here-") || (id == "moving" && self.moving_here.load(Ordering::SeqCst))
    }
}

fn executor(moving_here: Arc<AtomicBool>) -> (Executor, crate::common::Stores) {
    let stores = memory();
    let factory: PlacementFactory = Arc::new(move |aggregate_type| {
        assert_eq!(aggregate_type, "ledger", "asked for the registered type");
        Arc::new(Prefix {
            moving_here: Arc::clone(&moving_here),
        })
    });
    let executor = Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .placement(factory)
        .register::<Ledger>(AggregateSettings::new())
        .build()
        .unwrap();
    (executor, stores)
}

#[tokio::test]
async fn an_executor_serves_only_the_ids_its_placement_gives_it() {
    let (executor, stores) = executor(Arc::new(AtomicBool::new(false)));
    executor
        .execute::<Ledger>("here-1", LedgerCommand::Add(5))
        .await
        .unwrap();
    let refused = executor
        .execute::<Ledger>("there-1", LedgerCommand::Add(5))
        .await;
    assert!(
        matches!(refused, Err(CommandError::NotStored(ExecutorError::NotLocal { ref id })) if id == "there-1"),
        "{refused:?}"
    );
    assert!(!executor.is_live::<Ledger>("there-1"));
    assert!(
        crate::common::stored_events(&*stores.events, "there-1")
            .await
            .is_empty()
    );
    assert_eq!(
        executor.stats_of::<Ledger>().unwrap().runtime.activations,
        1
    );
}

#[tokio::test]
async fn a_key_that_moves_away_is_refused_from_then_on() {
    let moving_here = Arc::new(AtomicBool::new(true));
    let (executor, stores) = executor(Arc::clone(&moving_here));
    executor
        .execute::<Ledger>("moving", LedgerCommand::Add(1))
        .await
        .unwrap();
    assert!(executor.is_live::<Ledger>("moving"));
    moving_here.store(false, Ordering::SeqCst);
    let refused = executor
        .execute::<Ledger>("moving", LedgerCommand::Add(1))
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::NotStored(ExecutorError::NotLocal { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(
        crate::common::stored_events(&*stores.events, "moving")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn passivate_matching_stops_only_the_matching_actors_and_writes_their_snapshots() {
    let (executor, stores) = executor(Arc::new(AtomicBool::new(false)));
    for i in 0..10 {
        executor
            .execute::<Ledger>(&format!("here-{i}"), LedgerCommand::Add(i))
            .await
            .unwrap();
    }
    executor
        .passivate_matching(|aggregate_type, id| {
            aggregate_type == "ledger" && id.ends_with(['0', '2', '4', '6', '8'])
        })
        .await;
    for i in 0..10 {
        let id = format!("here-{i}");
        let even = i % 2 == 0;
        assert_eq!(executor.is_live::<Ledger>(&id), !even, "{id}");
        let snapshot = stores
            .snapshots
            .load_latest(&crate::common::stream(&id))
            .await
            .unwrap();
        assert_eq!(
            snapshot.is_some(),
            even,
            "{id}: a passivated actor left its snapshot"
        );
    }
}
