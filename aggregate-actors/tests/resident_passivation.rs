//! Leaving the resident tier other than by promotion: a requested passivation demotes a
//! resident aggregate to cold (snapshotting it first), and an entry whose state no longer
//! decodes is dropped for a read of the stores without counting as a promotion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, SnapshotStore, StreamId,
};
use aggregate_actors::strategy::Never;
use aggregate_actors::{
    Aggregate, AggregateSettings, Context, Executor, ResidentConfig, RuntimeConfig, TypeStats,
};
use serde::{Deserialize, Deserializer, Serialize};

struct Counter;

#[derive(Debug, Clone)]
enum Cmd {
    Add(i64),
    /// Marks the state so that its encoding no longer decodes.
    Poison,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ev {
    Added(i64),
    Poisoned,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: i64,
    #[serde(deserialize_with = "refuse_poisoned")]
    poisoned: bool,
}

/// Decodes `false` only: a poisoned state encodes but never decodes.
fn refuse_poisoned<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    if bool::deserialize(deserializer)? {
        return Err(serde::de::Error::custom("a poisoned state does not decode"));
    }
    Ok(false)
}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = Cmd;
    type Event = Ev;
    type State = Tally;
    type Error = std::convert::Infallible;

    fn decide(_: &Tally, command: &Cmd, _: &mut Context<'_, Self>) -> Result<Vec<Ev>, Self::Error> {
        Ok(vec![match command {
            Cmd::Add(amount) => Ev::Added(*amount),
            Cmd::Poison => Ev::Poisoned,
        }])
    }

    fn apply(state: &mut Tally, event: &Ev) {
        match event {
            Ev::Added(amount) => state.total += amount,
            Ev::Poisoned => state.poisoned = true,
        }
    }
}

struct Fixture {
    snapshots: Arc<InMemorySnapshotStore>,
    executor: Executor,
}

/// Snapshots only on passivation (when `on_passivation`), actors idle after 100 ms, the
/// resident tier as `tier`.
fn fixture(tier: ResidentConfig, on_passivation: bool) -> Fixture {
    let snapshots = Arc::new(InMemorySnapshotStore::new());
    let settings = AggregateSettings::<Counter>::new()
        .strategy(Never)
        .snapshot_on_passivation(on_passivation)
        .resident(tier)
        .runtime(RuntimeConfig {
            idle_timeout: Some(Duration::from_millis(100)),
            ..RuntimeConfig::default()
        });
    let executor = Executor::builder(
        Arc::new(InMemoryEventStore::new()) as Arc<dyn EventStore>,
        Arc::clone(&snapshots) as Arc<dyn SnapshotStore>,
    )
    .register::<Counter>(settings)
    .build()
    .unwrap();
    Fixture {
        snapshots,
        executor,
    }
}

impl Fixture {
    fn stats(&self) -> TypeStats {
        self.executor.stats_of::<Counter>().unwrap()
    }

    /// Waits (at most 10 s) until `id`'s actor has gone idle and left a resident entry.
    async fn until_resident(&self) {
        for _ in 0..1_000 {
            let stats = self.stats();
            if stats.resident.entries == 1 && stats.runtime.live == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the idle actor did not go resident: {:?}", self.stats());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivating_a_resident_aggregate_demotes_it_and_snapshots_it_first() {
    let f = fixture(ResidentConfig::default(), true);
    f.executor
        .execute::<Counter>("c", Cmd::Add(5))
        .await
        .unwrap();
    f.until_resident().await;
    assert!(
        f.snapshots
            .load_latest(&StreamId::new(Counter::TYPE, "c").unwrap())
            .await
            .unwrap()
            .is_none(),
        "resident, not snapshotted yet"
    );

    let passivated = f.executor.passivate::<Counter>("c").await.unwrap();
    f.executor.flush_snapshots().await;

    let latest = f
        .snapshots
        .load_latest(&StreamId::new(Counter::TYPE, "c").unwrap())
        .await
        .unwrap();
    assert_eq!(
        latest.map(|snapshot| snapshot.version),
        Some(1),
        "the demotion snapshotted the resident state"
    );
    let stats = f.stats();
    assert_eq!(stats.resident.entries, 0, "demoted to cold: {stats:?}");
    assert_eq!(stats.resident.demotions, 1);
    assert_eq!(stats.resident.demotion_snapshots, 1);
    assert!(passivated, "a resident aggregate counts as passivated");

    let committed = f
        .executor
        .execute::<Counter>("c", Cmd::Add(2))
        .await
        .unwrap();
    assert_eq!(committed.version, 2);
    let activation = f.stats().aggregate.last_activation.unwrap();
    assert!(!activation.from_resident, "{activation:?}");
    assert_eq!(activation.snapshot_version(), Some(1), "{activation:?}");
    assert_eq!(activation.events_replayed, 0, "{activation:?}");
    let view = f.executor.state::<Counter>("c").await.unwrap();
    assert_eq!(
        view.state,
        Tally {
            total: 7,
            poisoned: false
        }
    );
    // Nothing resident nor live any more: a second passivation finds nothing to do.
    f.executor.passivate::<Counter>("c").await.unwrap();
    assert!(!f.executor.passivate::<Counter>("c").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_entry_that_fails_to_decode_is_not_counted_as_a_promotion() {
    // Every state kept encoded, and no snapshot to fall back on: the stores' events only.
    let tier = ResidentConfig {
        decoded_max_bytes: 0,
        ..ResidentConfig::default()
    };
    let f = fixture(tier, false);
    f.executor
        .execute::<Counter>("p", Cmd::Add(3))
        .await
        .unwrap();
    f.executor
        .execute::<Counter>("p", Cmd::Poison)
        .await
        .unwrap();
    f.until_resident().await;
    assert_eq!(f.stats().resident.encoded, 1);

    let committed = f
        .executor
        .execute::<Counter>("p", Cmd::Add(4))
        .await
        .unwrap();
    assert_eq!(committed.version, 3);
    let stats = f.stats();
    let activation = stats.aggregate.last_activation.clone().unwrap();
    assert!(!activation.from_resident, "{activation:?}");
    assert_eq!(activation.events_replayed, 2, "read the stores instead");
    assert_eq!(stats.resident.promotions, 0, "not a promotion: {stats:?}");
    assert_eq!(stats.resident.undecodable, 1, "{stats:?}");
    assert_eq!(stats.resident.entries, 0, "the entry was dropped");
}
