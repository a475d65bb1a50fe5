//! In-memory backends: the embedded default, and the reference the PostgreSQL backends are
//! checked against by the contract suite.
//!
//! Streams are lock-striped: each stream has its own mutex inside a sharded map, so appends
//! to different streams proceed in parallel. Nothing on the append path is store-wide: event
//! ids are claimed in a sharded map, and positions are reserved with one atomic add and filled
//! into a segmented feed that readers walk without a lock (see `feed`). Reminders live in one
//! mutex-guarded table (see `reminders`) that only the calls storing or reading reminders take,
//! always after the stream's own lock.

mod archive;
mod event_store;
mod feed;
mod reminders;
mod row;
mod schedules;
mod snapshot_store;

pub use archive::InMemorySnapshotArchive;
pub use event_store::InMemoryEventStore;
pub use schedules::InMemoryScheduleStore;
pub use snapshot_store::InMemorySnapshotStore;

use chrono::{DateTime, SubsecRound, Utc};

/// Hashing for the stores' own maps: foldhash is several times faster than the standard
/// library's SipHash on 16-byte ids and short stream names, and keeps a random per-map seed.
type Hasher = foldhash::fast::RandomState;

/// Now, at the microsecond precision PostgreSQL keeps, so both backends return equal times.
pub(crate) fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
