//! Per-day snapshot statistics of one aggregate type, as this process counts them: the last
//! [`DAYS_KEPT`] days it saw (for [`AggregateStats`](super::AggregateStats)), and what it has
//! not yet added to the snapshot store, which keeps the sum over every process and restart
//! (the snapshot writer adds it; see [`SnapshotStore::add_snapshot_days`]).
//!
//! [`SnapshotStore::add_snapshot_days`]: event_stores::SnapshotStore::add_snapshot_days

use std::collections::VecDeque;

use chrono::Utc;
pub use event_stores::SnapshotDay;
use parking_lot::Mutex;

/// Days kept per type in this process.
pub const DAYS_KEPT: usize = 31;

/// The days, oldest first, and the figures not yet in the store.
#[derive(Debug, Default)]
pub(crate) struct Days(Mutex<Counted>);

#[derive(Debug, Default)]
struct Counted {
    kept: VecDeque<SnapshotDay>,
    unsaved: Vec<SnapshotDay>,
}

impl Days {
    /// Adds to today's figures.
    pub(crate) fn record(&self, change: impl Fn(&mut SnapshotDay)) {
        let today = Utc::now().date_naive();
        let mut counted = self.0.lock();
        match counted.kept.back_mut() {
            Some(last) if last.day == today => change(last),
            _ => {
                if counted.kept.len() == DAYS_KEPT {
                    counted.kept.pop_front();
                }
                let mut day = SnapshotDay::new(today);
                change(&mut day);
                counted.kept.push_back(day);
            }
        }
        match counted.unsaved.last_mut() {
            Some(last) if last.day == today => change(last),
            _ => {
                let mut day = SnapshotDay::new(today);
                change(&mut day);
                counted.unsaved.push(day);
            }
        }
    }

    /// Every kept day, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<SnapshotDay> {
        self.0.lock().kept.iter().cloned().collect()
    }

    /// The figures counted since the last call, to be added to the store.
    pub(crate) fn take_unsaved(&self) -> Vec<SnapshotDay> {
        std::mem::take(&mut self.0.lock().unsaved)
    }

    /// Puts back figures that could not be added to the store, for the next try.
    pub(crate) fn put_back(&self, days: Vec<SnapshotDay>) {
        let mut counted = self.0.lock();
        for day in days {
            match counted.unsaved.iter_mut().find(|d| d.day == day.day) {
                Some(same) => same.add(&day),
                None => counted.unsaved.push(day),
            }
        }
        counted.unsaved.sort_by_key(|d| d.day);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    }

    #[test]
    fn unsaved_figures_are_taken_once_and_put_back_after_a_failed_save() {
        let days = Days::default();
        days.record(|d| d.created += 1);
        let taken = days.take_unsaved();
        assert_eq!(taken.len(), 1);
        assert!(days.take_unsaved().is_empty());
        days.record(|d| d.created += 2);
        days.put_back(taken);
        let again = days.take_unsaved();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].created, 3);
        assert_eq!(
            days.snapshot()[0].created,
            3,
            "the kept days are not changed"
        );
    }
}
