//! Per-day snapshot statistics of an aggregate type, kept by its snapshot store: snapshots
//! created, deleted and archived on each UTC day, the bytes written and the time their creation
//! took.
//!
//! The snapshot writer adds what it did ([`SnapshotStore::add_snapshot_days`]); every process
//! that reads the store sees the sum of every writer's additions
//! ([`SnapshotStore::snapshot_days`]), across restarts and nodes. A row is a few dozen bytes
//! per type and day, so the stores keep them all.
//!
//! [`SnapshotStore::add_snapshot_days`]: crate::SnapshotStore::add_snapshot_days
//! [`SnapshotStore::snapshot_days`]: crate::SnapshotStore::snapshot_days

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;

use crate::invalid_input::InvalidInput;

/// The largest figure a store accepts in one addition (PostgreSQL keeps them as `bigint`).
pub const MAX_DAY_FIGURE: u64 = i64::MAX as u64;

/// One UTC day of one aggregate type's snapshot activity: either what one process did (an
/// addition) or, read from a store, the sum of every addition made for that day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDay {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Snapshots written.
    pub created: u64,
    /// Snapshots deleted by retention.
    pub deleted: u64,
    /// Snapshots moved to the archive by retention.
    pub archived: u64,
    /// Bytes stored by the snapshots written.
    pub bytes: u64,
    /// Time spent creating them (compressing, storing, reading back and verifying), summed.
    /// Stores keep it in whole microseconds.
    pub creation_time: Duration,
}

impl SnapshotDay {
    /// A day with every figure at zero.
    pub fn new(day: NaiveDate) -> Self {
        Self {
            day,
            created: 0,
            deleted: 0,
            archived: 0,
            bytes: 0,
            creation_time: Duration::ZERO,
        }
    }

    /// Mean time to create one snapshot that day.
    pub fn mean_creation_time(&self) -> Duration {
        match u32::try_from(self.created) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.creation_time / n,
            Err(_) => self.creation_time / u32::MAX,
        }
    }

    /// Adds `other`'s figures to this day's (saturating: statistics never fail a write).
    pub fn add(&mut self, other: &SnapshotDay) {
        self.created = self.created.saturating_add(other.created);
        self.deleted = self.deleted.saturating_add(other.deleted);
        self.archived = self.archived.saturating_add(other.archived);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.creation_time = self.creation_time.saturating_add(other.creation_time);
    }

    /// The creation time in whole microseconds, as stores keep it.
    pub fn creation_micros(&self) -> u64 {
        u64::try_from(self.creation_time.as_micros()).unwrap_or(u64::MAX)
    }

    /// True when every figure is zero (nothing to add).
    pub fn is_empty(&self) -> bool {
        self.created == 0
            && self.deleted == 0
            && self.archived == 0
            && self.bytes == 0
            && self.creation_time.is_zero()
    }
}

/// Checks the aggregate type and every figure of an addition, and folds days given more than
/// once into one (oldest first, empty days left out), as both stores store them.
pub(crate) fn prepare_addition(
    aggregate_type: &str,
    days: &[SnapshotDay],
) -> Result<Vec<SnapshotDay>, InvalidInput> {
    crate::StreamId::check_type(aggregate_type)?;
    let mut merged: BTreeMap<NaiveDate, SnapshotDay> = BTreeMap::new();
    for day in days {
        for (what, value) in [
            ("created", day.created),
            ("deleted", day.deleted),
            ("archived", day.archived),
            ("bytes", day.bytes),
            ("creation time (µs)", day.creation_micros()),
        ] {
            if value > MAX_DAY_FIGURE {
                return Err(InvalidInput::DayFigureTooLarge {
                    what,
                    value,
                    max: MAX_DAY_FIGURE,
                });
            }
        }
        merged
            .entry(day.day)
            .or_insert_with(|| SnapshotDay::new(day.day))
            .add(day);
    }
    Ok(merged.into_values().filter(|d| !d.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap_or_default()
    }

    #[test]
    fn the_mean_divides_the_creation_time_by_the_created() {
        let mut d = SnapshotDay::new(day(1));
        assert_eq!(d.mean_creation_time(), Duration::ZERO);
        d.created = 4;
        d.creation_time = Duration::from_millis(10);
        assert_eq!(d.mean_creation_time(), Duration::from_micros(2_500));
    }

    #[test]
    fn an_addition_folds_repeated_days_and_drops_empty_ones() {
        let mut a = SnapshotDay::new(day(2));
        a.created = 1;
        let mut b = SnapshotDay::new(day(1));
        b.deleted = 2;
        let prepared = prepare_addition("t", &[a.clone(), SnapshotDay::new(day(3)), b, a]);
        let prepared = prepared.unwrap_or_default();
        assert_eq!(prepared.len(), 2);
        assert_eq!((prepared[0].day, prepared[0].deleted), (day(1), 2));
        assert_eq!((prepared[1].day, prepared[1].created), (day(2), 2));
    }

    #[test]
    fn a_figure_beyond_bigint_or_a_bad_type_is_refused() {
        let mut a = SnapshotDay::new(day(1));
        a.bytes = u64::MAX;
        assert!(matches!(
            prepare_addition("t", &[a]),
            Err(InvalidInput::DayFigureTooLarge { what: "bytes", .. })
        ));
        assert!(matches!(
            prepare_addition("", &[]),
            Err(InvalidInput::EmptyId { .. })
        ));
    }
}
