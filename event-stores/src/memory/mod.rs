//! In-memory backends: the embedded default, and the reference the PostgreSQL backends are
//! checked against by the contract suite.
//!
//! Streams are lock-striped: each stream has its own mutex inside a sharded map, so appends
//! to different streams proceed in parallel. The only shared critical section is the push onto
//! the store-wide log that gives events their positions; it is a few pointer copies long.

mod event_store;
mod snapshot_store;

pub use event_store::InMemoryEventStore;
pub use snapshot_store::InMemorySnapshotStore;

use chrono::{DateTime, SubsecRound, Utc};

/// Now, at the microsecond precision PostgreSQL keeps, so both backends return equal times.
pub(crate) fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
