//! Decoding stored rows, shared by every statement that reads events or snapshots.

use bytes::Bytes;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{StoreError, StoreResult};
use crate::event::{EventMetadata, RecordedEvent};
use crate::snapshot::{SnapshotBase, SnapshotRecord};
use crate::stream::StreamId;
use crate::trace::TraceParent;

use super::error::map_sqlx;

/// Most events one append can carry in this backend: positions keep 16 bits for the event's
/// index within its transaction.
pub const PG_MAX_EVENTS_PER_APPEND: usize = 1 << 16;

/// Decodes the first eleven columns of [`READ_STREAM`] / [`READ_ALL`].
pub(super) fn decode_event(row: &PgRow, stream: StreamId) -> StoreResult<RecordedEvent> {
    decode_event_at(row, stream, 0)
}

/// Decodes the event columns of `row` starting at column `first`.
pub(super) fn decode_event_at(
    row: &PgRow,
    stream: StreamId,
    first: usize,
) -> StoreResult<RecordedEvent> {
    let decode = |e| map_sqlx("decoding an event", e);
    let version: i64 = row.try_get(first).map_err(decode)?;
    let schema_version: i32 = row.try_get(first + 3).map_err(decode)?;
    let payload: Vec<u8> = row.try_get(first + 4).map_err(decode)?;
    let position: i64 = row.try_get(first + 8).map_err(decode)?;
    let trace_parent = match row
        .try_get::<Option<&[u8]>, _>(first + 10)
        .map_err(decode)?
    {
        Some(bytes) => Some(
            TraceParent::from_bytes(bytes)
                .map_err(|e| StoreError::Corrupt(format!("event {version} of {stream}: {e}")))?,
        ),
        None => None,
    };
    Ok(RecordedEvent {
        event_id: row.try_get(first + 1).map_err(decode)?,
        command_id: row.try_get(first + 9).map_err(decode)?,
        stream,
        version: to_u64(version, "version")?,
        event_type: row.try_get(first + 2).map_err(decode)?,
        schema_version: schema_version as u32,
        payload: Bytes::from(payload),
        metadata: EventMetadata {
            correlation_id: row.try_get(first + 5).map_err(decode)?,
            causation_id: row.try_get(first + 6).map_err(decode)?,
            trace_parent,
        },
        recorded_at: row.try_get(first + 7).map_err(decode)?,
        position: to_u64(position, "position")?,
    })
}

/// A stored BIGINT that must not be negative.
pub(crate) fn to_u64(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}

/// Decodes a row of the snapshot columns, in the order the `SELECT`s above list them.
pub(super) fn decode_record(row: &PgRow, stream: StreamId) -> StoreResult<SnapshotRecord> {
    decode_record_at(row, stream, 0)
}

/// Columns of a snapshot as the statements that read one list them; [`decode_record_at`]
/// decodes them in this order.
pub(super) const SNAPSHOT_COLUMNS: usize = 12;

/// Decodes the snapshot columns of `row` starting at column `first`: `version, last_event_id,
/// state_schema_version, codec, compression, checksum, uncompressed_size, stored_size,
/// taken_at, bytes, base_version, base_checksum`.
pub(super) fn decode_record_at(
    row: &PgRow,
    stream: StreamId,
    first: usize,
) -> StoreResult<SnapshotRecord> {
    let decode = |e| map_sqlx("decoding a snapshot", e);
    let version: i64 = row.try_get(first).map_err(decode)?;
    let state_schema_version: i32 = row.try_get(first + 2).map_err(decode)?;
    let checksum: i64 = row.try_get(first + 5).map_err(decode)?;
    let uncompressed_size: i64 = row.try_get(first + 6).map_err(decode)?;
    let stored_size: i64 = row.try_get(first + 7).map_err(decode)?;
    let bytes: Vec<u8> = row.try_get(first + 9).map_err(decode)?;
    let base_version: Option<i64> = row.try_get(first + 10).map_err(decode)?;
    let base_checksum: Option<i64> = row.try_get(first + 11).map_err(decode)?;
    // The table's CHECK keeps the two together. A negative base version can only come from
    // damage outside this store: read as an impossible version, so the reader finds no such base
    // and skips this one snapshot rather than the store failing every read of the stream.
    let base = match (base_version, base_checksum) {
        (Some(version), Some(checksum)) => Some(SnapshotBase {
            version: u64::try_from(version).unwrap_or(u64::MAX),
            checksum: checksum as u64,
        }),
        _ => None,
    };
    Ok(SnapshotRecord {
        stream,
        version: to_u64(version, "snapshot version")?,
        last_event_id: row.try_get(first + 1).map_err(decode)?,
        state_schema_version: state_schema_version as u32,
        codec: row.try_get(first + 3).map_err(decode)?,
        compression: row.try_get(first + 4).map_err(decode)?,
        checksum: checksum as u64,
        // A negative size can only come from damage outside this store. It is read as an
        // impossible size, so the reader rejects this one snapshot (and counts it, and tries
        // the next older one) instead of the store failing every read of the stream.
        uncompressed_size: u64::try_from(uncompressed_size).unwrap_or(u64::MAX),
        stored_size: u64::try_from(stored_size).unwrap_or(u64::MAX),
        taken_at: row.try_get(first + 8).map_err(decode)?,
        bytes: Bytes::from(bytes),
        base,
    })
}
