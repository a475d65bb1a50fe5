//! [`Feed`]: the in-memory store's events in position order, written without a store-wide lock.
//!
//! An append reserves its positions with one atomic add and fills its slots itself, last slot
//! first; readers walk from a position until the first slot not yet filled. Filling backwards
//! makes an append's first slot the last one written, so a reader never sees part of an append,
//! and one that stops at an unfilled slot has skipped nothing: the events behind it show up on
//! its next read, exactly like PostgreSQL's `read_all` waiting for older transactions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::row::Row;

/// Slots in the first segment; segment `k` has `FIRST << k`.
const FIRST: u64 = 1024;
/// Segments: room for `FIRST * (2^SEGMENTS - 1)` events, far more than memory holds.
const SEGMENTS: usize = 40;

type Slot = OnceLock<Arc<Row>>;

/// Events by position (position `p` at index `p - 1`), in segments that double in size and are
/// allocated when first reached, so nothing is ever moved or locked to grow.
pub(super) struct Feed {
    reserved: AtomicU64,
    segments: [OnceLock<Box<[Slot]>>; SEGMENTS],
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            reserved: AtomicU64::new(0),
            segments: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl Feed {
    /// Reserves `count` consecutive positions; returns the first.
    pub(super) fn reserve(&self, count: u64) -> u64 {
        self.reserved.fetch_add(count, Ordering::AcqRel) + 1
    }

    /// Fills the slots reserved at `first` with `events` (in position order), last one first.
    pub(super) fn fill(&self, first: u64, events: &[Arc<Row>]) {
        for event in events.iter().rev() {
            // Each event carries its own position, `first` and up.
            debug_assert!(event.position >= first);
            if let Some(slot) = self.slot(event.position - 1, true) {
                // Reserved by this append alone: the slot is empty.
                let _ = slot.set(Arc::clone(event));
            }
        }
    }

    /// Up to `limit` events after `after`, stopping at the first position not yet filled.
    pub(super) fn read(&self, after: u64, limit: usize) -> Vec<Arc<Row>> {
        let mut events = Vec::new();
        let mut index = after;
        while events.len() < limit {
            match self.slot(index, false).and_then(OnceLock::get) {
                Some(event) => events.push(Arc::clone(event)),
                None => break,
            }
            index += 1;
        }
        events
    }

    /// How many events [`read`](Self::read) would return after `after` with no limit.
    pub(super) fn count_after(&self, after: u64) -> u64 {
        let reserved = self.reserved.load(Ordering::Acquire);
        (after..reserved)
            .take_while(|&index| self.slot(index, false).is_some_and(|s| s.get().is_some()))
            .count() as u64
    }

    /// The slot at `index`, allocating its segment if `allocate` (a reader never allocates).
    fn slot(&self, index: u64, allocate: bool) -> Option<&Slot> {
        let block = index / FIRST + 1;
        let segment = (u64::BITS - 1 - block.leading_zeros()) as usize;
        let start = FIRST * ((1u64 << segment) - 1);
        let slots = self.segments.get(segment)?;
        let slots = if allocate {
            slots.get_or_init(|| {
                let len = usize::try_from(FIRST << segment).unwrap_or(usize::MAX);
                (0..len).map(|_| OnceLock::new()).collect()
            })
        } else {
            slots.get()?
        };
        slots.get(usize::try_from(index - start).ok()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::event::NewEvent;
    use crate::memory::row::Place;
    use crate::stream::StreamId;

    fn event(position: u64) -> Arc<Row> {
        let stream = Arc::new(StreamId::new("t", "s").unwrap());
        let place = Place {
            stream: &stream,
            version: position,
            recorded_at: chrono::Utc::now(),
            position,
        };
        Arc::new(Row::new(NewEvent::new("E", 1, Vec::new()), place, None))
    }

    fn positions(events: &[Arc<Row>]) -> Vec<u64> {
        events.iter().map(|e| e.position).collect()
    }

    #[test]
    fn readers_stop_at_the_first_position_not_yet_filled_and_see_it_later() {
        let feed = Feed::default();
        let a = feed.reserve(2);
        let b = feed.reserve(1);
        feed.fill(b, &[event(b)]);
        assert!(
            feed.read(0, 10).is_empty(),
            "the append before it is not filled yet"
        );
        assert_eq!(feed.count_after(0), 0);
        feed.fill(a, &[event(a), event(a + 1)]);
        assert_eq!(positions(&feed.read(0, 10)), [1, 2, 3]);
        assert_eq!(feed.count_after(1), 2);
        assert_eq!(positions(&feed.read(1, 1)), [2]);
    }

    #[test]
    fn positions_across_segment_boundaries_read_back_in_order() {
        let feed = Feed::default();
        let total = FIRST * 7 + 5; // segments 0, 1 and 2, and into 3
        for _ in 0..total {
            let p = feed.reserve(1);
            feed.fill(p, &[event(p)]);
        }
        let all = feed.read(0, usize::MAX);
        assert_eq!(all.len() as u64, total);
        assert!(all.iter().zip(1..).all(|(e, p)| e.position == p));
        assert_eq!(positions(&feed.read(total - 1, 5)), [total]);
        assert_eq!(feed.count_after(total - 3), 3);
    }
}
