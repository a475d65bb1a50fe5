//! [`Projection`]: what a user writes to keep a read model up to date.

use async_trait::async_trait;
use event_stores::RecordedEvent;

/// Which events a projection is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EventFilter {
    /// Every event of every aggregate type.
    #[default]
    All,
    /// Only events of these aggregate types.
    Types(Vec<&'static str>),
}

impl EventFilter {
    /// Only events of the aggregate type `A`.
    pub fn of<A: aggregate_actors::Aggregate>() -> Self {
        Self::Types(vec![A::TYPE])
    }

    /// Whether `event` passes.
    pub fn admits(&self, event: &RecordedEvent) -> bool {
        match self {
            Self::All => true,
            Self::Types(types) => types.contains(&event.stream.aggregate_type()),
        }
    }
}

/// An error a projection's handler returns: the batch is not checkpointed and is handed to it
/// again after a back-off.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A read model kept up to date from the store-wide event feed, **at least once**: events come
/// in store order ([`EventStore::read_all`](event_stores::EventStore::read_all)) in batches,
/// and the checkpoint is saved after a batch is handled, so after a crash between the two the
/// batch is handled again. Make `handle` idempotent (an upsert keyed by the event's stream and
/// version, say), or use a [`PgProjection`](crate::postgres::PgProjection), whose checkpoint
/// commits in the same transaction as its writes (exactly once).
///
/// Decode events with [`aggregate_actors::upcast::read`], which lifts events stored under an
/// older event schema through the aggregate's upcasters.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the key of its checkpoint. Renaming a projection rebuilds it.
    fn name(&self) -> &str;

    /// Which events it wants (all by default). The checkpoint moves past the others too.
    fn filter(&self) -> EventFilter {
        EventFilter::All
    }

    /// Handles one batch of events, in store order (never empty).
    async fn handle(&self, events: &[RecordedEvent]) -> Result<(), HandlerError>;

    /// Clears the read model before a rebuild from the first event.
    async fn reset(&self) -> Result<(), HandlerError>;
}
