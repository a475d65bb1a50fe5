//! Per-day snapshot statistics of one aggregate type: created, deleted, archived, bytes and
//! mean creation time per UTC day, for the last [`DAYS_KEPT`] days this process saw.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use parking_lot::Mutex;

/// Days kept per type.
pub const DAYS_KEPT: usize = 31;

/// One UTC day of one type's snapshot activity in this process (not across restarts or
/// nodes: each process counts what it did).
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
    pub creation_time: Duration,
}

impl SnapshotDay {
    fn new(day: NaiveDate) -> Self {
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
}

/// The days, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Days(Mutex<VecDeque<SnapshotDay>>);

impl Days {
    /// Adds to today's figures.
    pub(crate) fn record(&self, change: impl FnOnce(&mut SnapshotDay)) {
        let today = Utc::now().date_naive();
        let mut days = self.0.lock();
        if days.back().is_none_or(|last| last.day != today) {
            if days.len() == DAYS_KEPT {
                days.pop_front();
            }
            days.push_back(SnapshotDay::new(today));
        }
        if let Some(day) = days.back_mut() {
            change(day);
        }
    }

    /// Every kept day, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<SnapshotDay> {
        self.0.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_of_one_day_add_up_and_the_mean_divides_by_the_created() {
        let days = Days::default();
        days.record(|d| {
            d.created += 2;
            d.bytes += 300;
            d.creation_time += Duration::from_millis(10);
        });
        days.record(|d| d.deleted += 1);
        let kept = days.snapshot();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].created, kept[0].deleted, kept[0].bytes),
            (2, 1, 300)
        );
        assert_eq!(kept[0].mean_creation_time(), Duration::from_millis(5));
        assert_eq!(
            SnapshotDay::new(kept[0].day).mean_creation_time(),
            Duration::ZERO
        );
    }
}
