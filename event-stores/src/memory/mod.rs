//! In-memory backends: the embedded default, and the reference the PostgreSQL backends are
//! checked against by the contract suite.
//!
//! Streams are lock-striped: each stream has its own mutex inside a sharded map, so appends
//! to different streams proceed in parallel. Nothing on the append path is store-wide: event
//! ids are claimed in sharded sorted maps (see `ids`), and positions are reserved with one
//! atomic add and filled into a segmented feed that readers walk without a lock (see `feed`).
//! Reminders live in one mutex-guarded table (see `reminders`) that only the calls storing or
//! reading reminders take, always after the stream's own lock.

mod archive;
mod event_store;
mod feed;
mod ids;
mod reminders;
mod row;
mod schedules;
mod snapshot_store;

pub use archive::InMemorySnapshotArchive;
pub use event_store::InMemoryEventStore;
pub use schedules::InMemoryScheduleStore;
pub use snapshot_store::InMemorySnapshotStore;

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SubsecRound, Utc};

/// Hashing for the stores' own maps: foldhash is several times faster than the standard
/// library's SipHash on short stream names, and keeps a random per-map seed.
type Hasher = foldhash::fast::RandomState;

/// Now, at the microsecond precision PostgreSQL keeps, so both backends return equal times.
///
/// Built from whole microseconds since the epoch rather than by truncating `Utc::now()`:
/// chrono's truncation is a checked subtraction on a calendar date and took a fifth of an
/// in-memory append's instructions.
pub(crate) fn now_micros() -> DateTime<Utc> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_micros()).ok())
        .and_then(DateTime::from_timestamp_micros)
        // A clock before 1970 or past year 292 277: chrono's own path handles both.
        .unwrap_or_else(|| Utc::now().trunc_subsecs(6))
}

#[cfg(test)]
mod tests {
    use chrono::{SubsecRound, Timelike, Utc};

    use super::now_micros;

    #[test]
    fn now_is_whole_microseconds_between_two_reads_of_the_clock() {
        let before = Utc::now().trunc_subsecs(6);
        let now = now_micros();
        let after = Utc::now();
        assert_eq!(
            now.nanosecond() % 1_000,
            0,
            "{now:?} has sub-microsecond digits"
        );
        assert!(
            before <= now && now <= after,
            "{before:?} <= {now:?} <= {after:?}"
        );
    }
}
