//! Snapshot records as the snapshot store (the "state provider") keeps them.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::stream::StreamId;

/// One stored snapshot of an aggregate's state. The store treats `bytes` as opaque: encoding,
/// compression and the checksum are the writer's business, recorded here so a reader can check
/// them before trusting the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The stream version the state includes (all events up to and including it).
    pub version: u64,
    /// The id of the event at `version`, to detect a snapshot that no longer matches its stream.
    pub last_event_id: Uuid,
    /// Schema version of the encoded state; a reader skips snapshots of another version.
    pub state_schema_version: u32,
    /// Name of the codec that encoded the state, e.g. `"msgpack"`.
    pub codec: String,
    /// Name of the compression applied after encoding, e.g. `"none"`, `"zstd"`, `"lz4"`, or
    /// `"zstd-delta"` for a delta against [`base`](Self::base).
    pub compression: String,
    /// Checksum over `bytes` exactly as stored.
    pub checksum: u64,
    /// Size of the encoded state before compression.
    pub uncompressed_size: u64,
    /// Size of `bytes`.
    pub stored_size: u64,
    /// When the snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// The stored bytes.
    pub bytes: Bytes,
    /// For an incremental (delta) snapshot: the earlier full snapshot its bytes are relative to.
    /// `None` for a full snapshot, which can be read on its own.
    pub base: Option<SnapshotBase>,
}

/// The full snapshot a delta snapshot was written against. A reader needs that snapshot's bytes
/// to decode the delta, and checks them against `checksum` so a replaced or damaged base is
/// detected instead of silently producing a wrong state. Stores never delete a snapshot that a
/// kept delta names as its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBase {
    /// The stream version of the base snapshot.
    pub version: u64,
    /// The base snapshot's `checksum` (over its bytes as stored) when the delta was written.
    pub checksum: u64,
}

/// Per-aggregate snapshot statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots kept.
    pub count: u64,
    /// Sum of their stored sizes.
    pub total_bytes: u64,
    /// Version of the newest, if any.
    pub newest_version: Option<u64>,
    /// `taken_at` of the oldest kept snapshot, if any.
    pub oldest_taken_at: Option<DateTime<Utc>>,
    /// `taken_at` of the newest kept snapshot, if any.
    pub newest_taken_at: Option<DateTime<Utc>>,
}
