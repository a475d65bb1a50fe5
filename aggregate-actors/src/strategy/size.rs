//! Snapshots by size: of the events since the last snapshot, or of the state's growth.

use std::io::Write;

use serde::Serialize;

use super::{SnapshotContext, SnapshotStrategy};
use crate::aggregate::Aggregate;

/// Snapshot by bytes rather than by count: once the events since the last snapshot amount to
/// a number of bytes (what an activation would have to read and replay), and/or once the
/// state's encoded size has moved that far from the last snapshot's. Aggregates with large
/// events snapshot often, those with tiny ones rarely, which a fixed event count cannot do.
///
/// Either limit alone, or both ([`event_bytes`](Self::event_bytes) then
/// [`or_state_change`](Self::or_state_change)): it fires when either is reached. Only with
/// new events since the last snapshot.
#[derive(Debug, Clone, Copy)]
pub struct SizeThreshold {
    event_bytes: Option<u64>,
    state_change: Option<u64>,
}

impl SizeThreshold {
    /// Snapshot once the events since the last snapshot total at least `bytes` of payload
    /// (0 is treated as 1).
    pub fn event_bytes(bytes: u64) -> Self {
        Self {
            event_bytes: Some(bytes.max(1)),
            state_change: None,
        }
    }

    /// Snapshot once the state's encoded size differs from the last snapshot's by at least
    /// `bytes` (grown or shrunk; 0 is treated as 1). Asks for
    /// [`SnapshotContext::state_size`], one encoding pass of the state per command (no
    /// allocation).
    pub fn state_change(bytes: u64) -> Self {
        Self {
            event_bytes: None,
            state_change: Some(bytes.max(1)),
        }
    }

    /// Also snapshot once the state's encoded size has changed by `bytes` (see
    /// [`state_change`](Self::state_change)).
    pub fn or_state_change(mut self, bytes: u64) -> Self {
        self.state_change = Some(bytes.max(1));
        self
    }
}

impl<A: Aggregate> SnapshotStrategy<A> for SizeThreshold {
    fn should_snapshot(&self, context: &SnapshotContext<'_, A>) -> bool {
        if context.events_since_snapshot() == 0 {
            return false;
        }
        let by_events = self
            .event_bytes
            .is_some_and(|limit| context.event_bytes_since_snapshot >= limit);
        by_events
            || self.state_change.is_some_and(|limit| {
                context.state_size().abs_diff(context.last_snapshot_size) >= limit
            })
    }
}

/// Counts bytes written, keeping none.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of `value` as the codec stores it (MessagePack with named fields), or 0 if it
/// cannot be encoded.
pub(super) fn encoded_size<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut counter = Counter(0);
    match rmp_serde::encode::write_named(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn the_counted_size_is_the_size_of_the_stored_encoding() {
        let value = (vec![7_u8; 300], "a name", 12_345_u64);
        assert_eq!(
            encoded_size(&value),
            codec::encode(&value)
                .map(|bytes| bytes.len() as u64)
                .unwrap_or(0)
        );
    }
}
