//! JSON views of stored events and snapshots, shared by the HTTP API and the inspector.

use aggregate_actors::Aggregate;
use aggregate_actors::codec::{self, CodecError};
use aggregate_actors::event_stores::{RecordedEvent, SnapshotRecord};
use aggregate_actors::upcast;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// An event as JSON: `{"type": "Deposited", "data": {"amount_cents": 500, …}}`.
pub fn event_json<A: Aggregate>(event: &A::Event) -> Value {
    let event_type = A::event_type(event).into_owned();
    let data = match serde_json::to_value(event) {
        // Serde writes enum variants as `{"Variant": {…}}`; the type is shown separately.
        Ok(Value::Object(mut map)) if map.len() == 1 && map.contains_key(&event_type) => {
            map.remove(&event_type).unwrap_or(Value::Null)
        }
        Ok(other) => other,
        Err(error) => Value::String(format!("<cannot show as JSON: {error}>")),
    };
    serde_json::json!({ "type": event_type, "data": data })
}

/// A stored event with its payload decoded.
#[derive(Debug, Serialize)]
pub struct StoredEventView {
    /// Version within the stream.
    pub version: u64,
    /// The stored type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// The event id (UUID v7).
    pub event_id: String,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The payload decoded as the aggregate's event type, as JSON; if that fails, decoded as
    /// untyped MessagePack, and failing that the error.
    pub payload: Value,
}

impl StoredEventView {
    /// Decodes `event` as an event of `A`, lifted through `A`'s upcasters if it is older.
    pub fn of<A: Aggregate>(event: &RecordedEvent) -> Self {
        let read =
            upcast::decode_event::<A>(&event.event_type, event.schema_version, &event.payload);
        let payload = match read {
            Ok(typed) => event_json::<A>(&typed)["data"].take(),
            Err(typed_error) => match codec::decode::<Value>(&event.payload) {
                Ok(untyped) => serde_json::json!({ "undecodable_as": A::TYPE, "raw": untyped }),
                Err(_) => Value::String(format!("<undecodable: {typed_error}>")),
            },
        };
        Self {
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            event_id: event.event_id.to_string(),
            recorded_at: event.recorded_at,
            payload,
        }
    }
}

/// A stored snapshot's metadata and integrity, and optionally its state.
#[derive(Debug, Serialize)]
pub struct SnapshotView {
    /// The stream version it includes.
    pub version: u64,
    /// The id of the event at that version.
    pub last_event_id: String,
    /// Schema version of the state.
    pub state_schema_version: u32,
    /// True when that is the version this build reads.
    pub schema_current: bool,
    /// Codec: `msgpack+commands` (the state and the ids of its recent commands), or
    /// `msgpack` (the state alone) for snapshots written before commands were recorded.
    pub codec: String,
    /// Compression (`none` or `zstd`).
    pub compression: String,
    /// Bytes as stored.
    pub stored_size: u64,
    /// Bytes before compression.
    pub uncompressed_size: u64,
    /// The recorded checksum, hex.
    pub checksum: String,
    /// `ok`, or why the bytes failed verification (checksum, codec, decompression, decoding).
    pub integrity: String,
    /// Whether the stored event at `version` has `last_event_id` (a snapshot of a stream that
    /// was since rewritten does not); `None` when not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_matches: Option<bool>,
    /// True when the snapshot is usable: intact, of the current schema, and (when checked)
    /// matching its stream — the checks the framework makes before trusting one.
    pub valid: bool,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// For a delta snapshot, the version of the full snapshot it was written against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
    /// The decoded state, when asked for and valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

impl SnapshotView {
    /// Verifies `record` as a snapshot of `A` (checksum and decompression through
    /// [`codec::unseal`], then [`codec::decode_snapshot`] for its codec) and describes it; with
    /// `with_state` the decoded state is included.
    pub fn of<A: Aggregate>(record: &SnapshotRecord, with_state: bool) -> Self {
        let decoded = codec::unseal(
            &record.bytes,
            &record.codec,
            &record.compression,
            record.checksum,
            record.uncompressed_size,
        )
        .and_then(|encoded| codec::decode_snapshot::<A::State>(&record.codec, &encoded));
        let schema_current = record.state_schema_version == A::STATE_SCHEMA_VERSION;
        let (integrity, state) = match decoded {
            Ok(state) => ("ok".to_owned(), Some(state)),
            Err(error) => (integrity_error(&error), None),
        };
        let valid = state.is_some() && schema_current;
        Self {
            version: record.version,
            last_event_id: record.last_event_id.to_string(),
            state_schema_version: record.state_schema_version,
            schema_current,
            codec: record.codec.clone(),
            compression: record.compression.clone(),
            stored_size: record.stored_size,
            uncompressed_size: record.uncompressed_size,
            checksum: format!("{:016x}", record.checksum),
            integrity,
            last_event_matches: None,
            valid,
            base_version: record.base.map(|base| base.version),
            taken_at: record.taken_at,
            state: state
                .filter(|_| with_state)
                .map(|s| serde_json::to_value(s).unwrap_or(Value::Null)),
        }
    }

    /// Takes the framework's verdict ([`Executor::snapshots`](aggregate_actors::Executor::snapshots)),
    /// which also opens a delta against its base: the view's own check reads the bytes alone.
    pub fn apply_verdict(&mut self, info: &aggregate_actors::SnapshotInfo) {
        self.base_version = info.base.map(|base| base.version);
        match &info.verified {
            Ok(()) => {
                self.valid = true;
                self.integrity = "ok".to_owned();
            }
            Err(reason) => {
                self.valid = false;
                self.integrity = reason.clone();
            }
        }
    }

    /// Records whether the event stored at the snapshot's version is the one it was taken
    /// after (`stored_event_id` is `None` when the stream has no event there).
    pub fn check_last_event(&mut self, stored_event_id: Option<uuid::Uuid>) {
        let matches = stored_event_id.is_some_and(|id| id.to_string() == self.last_event_id);
        self.last_event_matches = Some(matches);
        self.valid &= matches;
    }
}

fn integrity_error(error: &CodecError) -> String {
    match error {
        CodecError::Checksum { .. } => format!("bad checksum ({error})"),
        other => format!("bad ({other})"),
    }
}

/// One UTC day of a type's snapshot activity: as the store keeps it (every process) in
/// `inspect` and `/stats`, or as one process counted it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotDayView {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Snapshots written.
    pub created: u64,
    /// Snapshots deleted by retention.
    pub deleted: u64,
    /// Snapshots moved to the archive by retention.
    pub archived: u64,
    /// Bytes stored by the snapshots written.
    pub bytes: u64,
    /// Mean time to create one, in milliseconds (µs precision).
    pub mean_creation_ms: f64,
}

impl SnapshotDayView {
    /// The view of `day`.
    pub fn of(day: &aggregate_actors::SnapshotDay) -> Self {
        Self {
            day: day.day.to_string(),
            created: day.created,
            deleted: day.deleted,
            archived: day.archived,
            bytes: day.bytes,
            mean_creation_ms: day.mean_creation_time().as_micros() as f64 / 1_000.0,
        }
    }
}
