//! The backup file's bytes: the frames, and reading and writing them (the layout is described
//! in the module documentation of [`backup`](super)).

use std::io::{self, Read, Write};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::{BackupError, BackupScope};
use crate::event::{EventMetadata, NewEvent, RecordedEvent};
use crate::invalid_input::InvalidInput;
use crate::limits::check_event_type;
use crate::snapshot::{SnapshotBase, SnapshotRecord};
use crate::stream::StreamId;
use crate::trace::TraceParent;

/// The first 8 bytes of every backup file.
pub const MAGIC: [u8; 8] = *b"ESBACKUP";

/// The format version this build writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest frame body, in bytes. Above the default snapshot limit (64 MiB) with room for
/// the record's fields; a length above it can only come from a damaged file.
pub const MAX_FRAME_BYTES: u32 = 128 * 1024 * 1024;

/// One frame's body.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Frame {
    Header(HeaderFrame),
    Event(EventFrame),
    Snapshot(SnapshotFrame),
    Trailer(TrailerFrame),
}

/// The first frame: what the file is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HeaderFrame {
    /// [`FORMAT_VERSION`] again, inside the checksummed part.
    pub format: u32,
    pub created_at_us: i64,
    /// The program that wrote the file, e.g. `event-stores 0.1.0`.
    pub tool: String,
    pub scope: ScopeFrame,
}

/// A [`BackupScope`] as written in the header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ScopeFrame {
    pub aggregate_type: Option<String>,
    pub ids: Vec<String>,
    pub recorded_from_us: Option<i64>,
    pub recorded_before_us: Option<i64>,
}

/// One event, with everything a store keeps of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EventFrame {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
    pub event_id: Uuid,
    pub command_id: Option<Uuid>,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Bytes,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// The W3C text form, `00-<trace id>-<parent id>-<flags>`.
    pub trace_parent: Option<String>,
    /// When the source store recorded it (not restored: the target records its own time).
    pub recorded_at_us: i64,
    /// Its position in the source store (not restored either).
    pub position: u64,
}

/// One snapshot record (its stored size is the length of `bytes`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SnapshotFrame {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
    pub last_event_id: Uuid,
    pub state_schema_version: u32,
    pub codec: String,
    pub compression: String,
    pub checksum: u64,
    pub uncompressed_size: u64,
    pub taken_at_us: i64,
    pub bytes: Bytes,
    /// For a delta snapshot: `(version, checksum)` of its base.
    pub base: Option<(u64, u64)>,
}

/// The last frame: counts and the running checksum of the frames before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TrailerFrame {
    pub frames: u64,
    pub streams: u64,
    pub events: u64,
    pub snapshots: u64,
    pub running_checksum: u64,
}

impl ScopeFrame {
    pub fn from_scope(scope: &BackupScope) -> Self {
        let (from, before) = scope.time_range();
        Self {
            aggregate_type: scope.type_filter().map(str::to_owned),
            ids: scope.ids().to_vec(),
            recorded_from_us: from.map(|t| t.timestamp_micros()),
            recorded_before_us: before.map(|t| t.timestamp_micros()),
        }
    }

    /// The scope back; a time that cannot be represented is dropped (the scope is only
    /// informational once the file exists).
    pub fn to_scope(&self) -> BackupScope {
        let mut scope = match &self.aggregate_type {
            Some(t) => BackupScope::aggregate_type(t.clone()),
            None => BackupScope::all(),
        }
        .with_ids(self.ids.iter().cloned());
        if let Some(from) = self
            .recorded_from_us
            .and_then(DateTime::from_timestamp_micros)
        {
            scope = scope.recorded_from(from);
        }
        if let Some(before) = self
            .recorded_before_us
            .and_then(DateTime::from_timestamp_micros)
        {
            scope = scope.recorded_before(before);
        }
        scope
    }
}

impl EventFrame {
    pub fn from_recorded(event: &RecordedEvent) -> Self {
        Self {
            aggregate_type: event.stream.aggregate_type().to_owned(),
            aggregate_id: event.stream.aggregate_id().to_owned(),
            version: event.version,
            event_id: event.event_id,
            command_id: event.command_id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            // `Bytes` clones share the buffer: no copy of the payload.
            payload: event.payload.clone(),
            correlation_id: event.metadata.correlation_id,
            causation_id: event.metadata.causation_id,
            trace_parent: event.metadata.trace_parent.map(|tp| tp.to_string()),
            recorded_at_us: event.recorded_at.timestamp_micros(),
            position: event.position,
        }
    }

    /// The event to append, checked as far as the file alone can tell: its type as every
    /// store checks it, its version and traceparent (the stream id is checked by
    /// [`stream_id`], the limits of a store by the import).
    pub fn to_new_event(&self, frame: u64) -> Result<NewEvent, BackupError> {
        check_event_type(&self.event_type).map_err(|source| invalid(frame, source))?;
        if self.version == 0 {
            return Err(malformed(frame, "an event has version 0".into()));
        }
        let trace_parent = match &self.trace_parent {
            Some(text) => Some(text.parse::<TraceParent>().map_err(|e| {
                malformed(
                    frame,
                    format!("event {} has a bad traceparent: {e}", self.event_id),
                )
            })?),
            None => None,
        };
        Ok(NewEvent {
            event_id: self.event_id,
            command_id: self.command_id,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            payload: self.payload.clone(),
            metadata: EventMetadata {
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                trace_parent,
            },
        })
    }
}

impl SnapshotFrame {
    pub fn from_record(record: &SnapshotRecord) -> Self {
        Self {
            aggregate_type: record.stream.aggregate_type().to_owned(),
            aggregate_id: record.stream.aggregate_id().to_owned(),
            version: record.version,
            last_event_id: record.last_event_id,
            state_schema_version: record.state_schema_version,
            codec: record.codec.clone(),
            compression: record.compression.clone(),
            checksum: record.checksum,
            uncompressed_size: record.uncompressed_size,
            taken_at_us: record.taken_at.timestamp_micros(),
            bytes: record.bytes.clone(),
            base: record.base.map(|base| (base.version, base.checksum)),
        }
    }

    /// The record to save. The only place a [`SnapshotRecord`] is built from a file.
    pub fn to_record(&self, stream: StreamId, frame: u64) -> Result<SnapshotRecord, BackupError> {
        if self.version == 0 {
            return Err(malformed(frame, "a snapshot has version 0".into()));
        }
        let taken_at = DateTime::<Utc>::from_timestamp_micros(self.taken_at_us)
            .ok_or_else(|| malformed(frame, format!("bad taken_at {}", self.taken_at_us)))?;
        Ok(SnapshotRecord {
            stream,
            version: self.version,
            last_event_id: self.last_event_id,
            state_schema_version: self.state_schema_version,
            codec: self.codec.clone(),
            compression: self.compression.clone(),
            checksum: self.checksum,
            uncompressed_size: self.uncompressed_size,
            stored_size: self.bytes.len() as u64,
            taken_at,
            bytes: self.bytes.clone(),
            base: self
                .base
                .map(|(version, checksum)| SnapshotBase { version, checksum }),
        })
    }
}

/// The stream a frame names, checked like any [`StreamId`].
pub(super) fn stream_id(
    aggregate_type: &str,
    aggregate_id: &str,
    frame: u64,
) -> Result<StreamId, BackupError> {
    StreamId::new(aggregate_type, aggregate_id)
        .map_err(|e| malformed(frame, format!("invalid stream id: {e}")))
}

pub(super) fn malformed(frame: u64, reason: String) -> BackupError {
    BackupError::Malformed { frame, reason }
}

/// Frame `frame` holds what a store refuses with `source`.
pub(super) fn invalid(frame: u64, source: InvalidInput) -> BackupError {
    BackupError::InvalidInput { frame, source }
}

/// A reader or writer that counts the bytes through it and remembers whether the inner one
/// failed, so a decoder's error can be told apart from the file's.
pub(super) struct Counting<T> {
    inner: T,
    /// Bytes read or written so far.
    pub bytes: u64,
    /// Whether the inner reader failed.
    pub failed: bool,
}

impl<T> Counting<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            bytes: 0,
            failed: false,
        }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            self.failed = e.kind() != io::ErrorKind::Interrupted;
        })?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes frames: the magic and version, then a zstd stream of checksummed frames.
pub(super) struct FrameWriter<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, Counting<W>>,
    frames: u64,
    running: Xxh3,
    body: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub fn start(out: W, level: i32) -> Result<Self, BackupError> {
        let mut out = Counting::new(out);
        out.write_all(&MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
        // zstd's own checksum of the whole stream, in addition to the frames' own.
        encoder.include_checksum(true)?;
        Ok(Self {
            encoder,
            frames: 0,
            running: Xxh3::new(),
            body: Vec::new(),
        })
    }

    pub fn write(&mut self, frame: &Frame) -> Result<(), BackupError> {
        self.body.clear();
        rmp_serde::encode::write_named(&mut self.body, frame).map_err(|e| BackupError::Encode {
            frame: self.frames,
            message: e.to_string(),
        })?;
        let len = u32::try_from(self.body.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME_BYTES)
            .ok_or(BackupError::FrameTooLarge {
                frame: self.frames,
                len: self.body.len() as u64,
                max: u64::from(MAX_FRAME_BYTES),
            })?;
        let checksum = xxh3_64(&self.body);
        self.encoder.write_all(&len.to_le_bytes())?;
        self.encoder.write_all(&checksum.to_le_bytes())?;
        self.encoder.write_all(&self.body)?;
        self.running.update(&checksum.to_le_bytes());
        self.frames += 1;
        Ok(())
    }

    /// Compressed bytes written so far (the compressor holds back what it has not emitted).
    pub fn bytes(&self) -> u64 {
        self.encoder.get_ref().bytes
    }

    /// Writes the trailer, ends the zstd stream and flushes; returns the file's size.
    pub fn finish(mut self, streams: u64, events: u64, snapshots: u64) -> Result<u64, BackupError> {
        let trailer = TrailerFrame {
            frames: self.frames,
            streams,
            events,
            snapshots,
            running_checksum: self.running.digest(),
        };
        self.write(&Frame::Trailer(trailer))?;
        let mut out = self.encoder.finish()?;
        out.flush()?;
        Ok(out.bytes)
    }
}
