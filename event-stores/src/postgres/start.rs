//! Activation's first read in one statement: the newest snapshot of a stream and the events
//! from its version on, when the snapshots share the events' database.
//!
//! Separately this is two round trips (the snapshot, then the events from the snapshot's own
//! event, whose id verifies it); here a `UNION ALL` returns both: one row for the snapshot, if
//! any, with the snapshot columns set, then the event rows with the event columns set.

use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::error::StoreResult;
use crate::event_store::StreamStart;
use crate::stream::StreamId;

use super::error::map_sqlx;
use super::event_store::decode_event_at;
use super::snapshot_store::decode_record_at;

/// Column 0 says which kind of row it is; columns 1–10 are a snapshot's, 11–20 an event's.
const READ_START: &str = r#"
WITH snap AS (
    SELECT version, last_event_id, state_schema_version, codec, compression, checksum,
           uncompressed_size, stored_size, taken_at, bytes
    FROM snapshots
    WHERE aggregate_type = $1::text AND aggregate_id = $2::text
    ORDER BY version DESC
    LIMIT 1
)
SELECT TRUE, s.version, s.last_event_id, s.state_schema_version, s.codec, s.compression,
       s.checksum, s.uncompressed_size, s.stored_size, s.taken_at, s.bytes,
       NULL::bigint, NULL::uuid, NULL::text, NULL::int4, NULL::bytea, NULL::uuid, NULL::uuid,
       NULL::timestamptz, NULL::bigint, NULL::uuid
FROM snap s
UNION ALL
(SELECT FALSE, NULL::bigint, NULL::uuid, NULL::int4, NULL::text, NULL::text, NULL::bigint,
        NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::bytea,
        e.version, e.event_id, e.event_type, e.schema_version, e.payload, e.correlation_id,
        e.causation_id, e.recorded_at, e.position, e.command_id
 FROM events e
 WHERE e.aggregate_type = $1::text AND e.aggregate_id = $2::text
   AND e.version >= COALESCE((SELECT version FROM snap), 1)
 ORDER BY e.version
 LIMIT $3::bigint)
"#;

/// The server and database `pool` connects to, as `postgres://host:port/database`.
pub(super) fn location(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

/// The newest snapshot of `stream` and up to `page_size` events from its version on.
pub(super) async fn read_start(
    pool: &PgPool,
    stream: &StreamId,
    page_size: usize,
) -> StoreResult<StreamStart> {
    let rows = sqlx::query(READ_START)
        .bind(stream.aggregate_type())
        .bind(stream.aggregate_id())
        .bind(i64::try_from(page_size).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(|e| map_sqlx("reading a snapshot and the events after it", e))?;
    let mut start = StreamStart {
        snapshot: None,
        events: Vec::with_capacity(rows.len()),
    };
    for row in &rows {
        let is_snapshot: bool = row
            .try_get(0)
            .map_err(|e| map_sqlx("decoding an activation read", e))?;
        if is_snapshot {
            start.snapshot = Some(decode_record_at(row, stream.clone(), 1)?);
        } else {
            start.events.push(decode_event_at(row, stream.clone(), 11)?);
        }
    }
    // UNION ALL keeps each branch's order in practice, but SQL does not promise it.
    start.events.sort_by_key(|e| e.version);
    Ok(start)
}
