//! Backup and restore: the events and snapshots of a store, or of a part of it, in one portable,
//! versioned, checksummed file, and back.
//!
//! [`export`] writes the events of a [`BackupScope`] (everything; one aggregate type; some ids of
//! that type; and/or a `recorded_at` range) and the snapshots of the streams it met to any
//! [`std::io::Write`]; [`import`] verifies a file completely and only then writes it into a
//! store, empty or not; [`verify`] checks a file without a store. They work only through the
//! [`EventStore`](crate::EventStore) and [`SnapshotStore`](crate::SnapshotStore) traits, so one
//! file moves data between any two backends (PostgreSQL to memory, memory to PostgreSQL, …).
//! Both directions stream: memory holds one page of events (or one frame) and a few numbers per
//! stream met, never the whole backup. Both report [`Progress`] to a callback, for a progress bar.
//!
//! ```
//! use event_stores::backup::{self, BackupScope, ExportOptions, ImportOptions};
//! use event_stores::{EventStore, InMemoryEventStore, InMemorySnapshotStore, NewEvent, StreamId};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (events, snapshots) = (InMemoryEventStore::new(), InMemorySnapshotStore::new());
//! let stream = StreamId::new("account", "acc-1")?;
//! events.append(&stream, 0, vec![NewEvent::new("Opened", 1, b"{}".to_vec())]).await?;
//!
//! let mut file = Vec::new();
//! let exported = backup::export(&events, &snapshots, &BackupScope::all(), &mut file,
//!     &ExportOptions::default(), |_| {}).await?;
//! assert_eq!(exported.events, 1);
//!
//! let (target, target_snapshots) = (InMemoryEventStore::new(), InMemorySnapshotStore::new());
//! let imported = backup::import(|| Ok(file.as_slice()), &target, &target_snapshots,
//!     &ImportOptions::default(), |_| {}).await?;
//! assert_eq!(imported.events_written, 1);
//! assert_eq!(target.stream_version(&stream).await?, 1);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # The file format (version 1)
//!
//! ```text
//! file    = magic version zstd(frame*)
//! magic   = "ESBACKUP"                      8 bytes
//! version = u32 little-endian               4 bytes, = 1
//! frame   = length checksum body            inside one zstd stream
//! length  = u32 little-endian               body length, at most MAX_FRAME_BYTES
//! checksum= u64 little-endian               xxh3-64 of body
//! body    = MessagePack (named fields) of one of
//!           {"Header":   {format, created_at_us, tool, scope}}
//!           {"Event":    {aggregate_type, aggregate_id, version, event_id, command_id,
//!                         event_type, schema_version, payload, correlation_id, causation_id,
//!                         trace_parent, recorded_at_us, position}}
//!           {"Snapshot": {aggregate_type, aggregate_id, version, last_event_id,
//!                         state_schema_version, codec, compression, checksum,
//!                         uncompressed_size, taken_at_us, bytes, base}}
//!           {"Trailer":  {frames, streams, events, snapshots, running_checksum}}
//! ```
//!
//! The frames come in this order: one header, the events (in the source's position order, so
//! each stream's versions ascend without gaps), the snapshots (per stream, oldest first, so a
//! delta follows its base), one trailer, and then the end of the zstd stream. The trailer
//! counts the frames before it and carries `running_checksum`, xxh3-64 over the 8-byte checksums
//! of those frames in order: a frame lost, added or moved is found even when every frame is
//! intact on its own. Ids are 16-byte binaries, times microseconds since the Unix epoch, payloads
//! and snapshot bytes binaries exactly as stored (the store's codecs are opaque here).
//!
//! The magic and version are outside the compression so that any file can be told apart and a
//! newer format is refused by name ([`BackupError::UnsupportedVersion`]) before anything is
//! decoded. Every frame has its own checksum so that damage is reported where it is
//! ([`BackupError::Checksum`] names the frame) and a corrupt length cannot make a reader
//! allocate more than [`MAX_FRAME_BYTES`] or more than the bytes actually present.
//!
//! # What import checks, and when a stored stream is a conflict
//!
//! [`import`] reads the file twice. The first pass checks everything and writes nothing: frame
//! checksums, frame order, the trailer, that each stream's versions in the file are contiguous
//! ([`BackupError::NotContiguous`]), that each snapshot belongs to a stream of the file at a
//! version the file reaches, each event and snapshot as the stores check them (names without
//! control characters, no event id twice in the file, payloads and snapshots within
//! [`ImportOptions::limits`]: [`BackupError::InvalidInput`]), and each stream against the
//! target store:
//!
//! - the store does not have the stream, and the file starts it at version 1: imported;
//! - the store's version is exactly one below the file's first version: the file continues the
//!   stream (an incremental backup of a later time range) and is appended;
//! - the store already holds some or all of the file's versions of the stream and their event
//!   ids are the file's, in order: those events are skipped as already imported (re-running an
//!   import, or resuming one that stopped half way, is safe) and the rest is appended;
//! - anything else (a gap before the file's first version, or other events at those versions)
//!   is a [`BackupError::Conflict`], and nothing at all is written.
//!
//! The second pass appends each stream's events in batches with the expected version of the
//! previous batch (so a concurrent writer is refused, not overwritten), keeping event ids,
//! command ids, types, schema versions, metadata and payloads, then saves the snapshots
//! unchanged (a save at the same version replaces the record, so this too is idempotent).
//! A batch holds at most [`ImportOptions::batch_events`] events, and never more events or
//! payload bytes than one append of [`ImportOptions::limits`] takes (`max_events_per_append`,
//! `max_append_bytes`): batch options larger than the target's limits are cut down to them,
//! not refused, and never make the target refuse an append half way through an import.
//!
//! Not preserved: `recorded_at` and positions are assigned by the target store at import (the
//! file keeps the originals, for reading, but [`NewEvent`](crate::NewEvent) has no place for
//! them), so time-travel reads of imported events see the import time while snapshots keep
//! their `taken_at`. Reminders are not part of a backup.
//!
//! Limits of the first pass's guarantee: event ids are unique across a store, and an imported
//! id that another stream of the target already holds is refused by the store during the second
//! pass (as are payloads, and appends, above the target's limits when those are below
//! [`ImportOptions::limits`]); the streams appended before that stay.
//! Running the import again after fixing the cause continues where it stopped. The file must
//! read the same both times (`open` is called twice); the second pass checks every frame again.
//!
//! # Consistency of an export
//!
//! An export reads the store while it may be written. Each stream's events come out contiguous
//! and in order, and the export includes whatever was visible when it reached the end. For
//! chains of incremental exports by time (`recorded_before(t1)`, then
//! `recorded_from(t1).recorded_before(t2)`, half-open so nothing is exported twice or skipped),
//! pick bounds a few seconds in the past: an append may commit a moment after the time it
//! records.

mod error;
mod export;
mod format;
mod import;
mod reader;
mod scan;

use chrono::{DateTime, Utc};

pub use error::BackupError;
pub use export::{ExportOptions, ExportReport, export};
pub use format::{FORMAT_VERSION, MAGIC, MAX_FRAME_BYTES};
pub use import::{ImportOptions, ImportReport, import, import_file, verify};
pub use scan::BackupSummary;

use crate::event::RecordedEvent;

/// Which events (and so which snapshots) an [`export`] writes.
///
/// ```
/// use event_stores::backup::BackupScope;
///
/// let everything = BackupScope::all();
/// let two_accounts = BackupScope::aggregate_type("account").with_ids(["a-1", "a-2"]);
/// let since_noon = BackupScope::all().recorded_from("2025-01-01T12:00:00Z".parse().unwrap());
/// # drop((everything, two_accounts, since_noon));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupScope {
    aggregate_type: Option<String>,
    ids: Vec<String>,
    recorded_from: Option<DateTime<Utc>>,
    recorded_before: Option<DateTime<Utc>>,
}

impl BackupScope {
    /// Every stream of the store.
    pub fn all() -> Self {
        Self::default()
    }

    /// The streams of one aggregate type.
    pub fn aggregate_type(aggregate_type: impl Into<String>) -> Self {
        Self {
            aggregate_type: Some(aggregate_type.into()),
            ..Self::default()
        }
    }

    /// Only these aggregate ids (of the scope's aggregate type, which is then required). Read
    /// stream by stream instead of scanning the whole store.
    pub fn with_ids<I: Into<String>>(mut self, ids: impl IntoIterator<Item = I>) -> Self {
        self.ids.extend(ids.into_iter().map(Into::into));
        self.ids.sort();
        self.ids.dedup();
        self
    }

    /// Only events recorded at or after `at`.
    pub fn recorded_from(mut self, at: DateTime<Utc>) -> Self {
        self.recorded_from = Some(at);
        self
    }

    /// Only events recorded strictly before `at` (half-open, so that `recorded_before(t)` and
    /// `recorded_from(t)` split a store without overlap).
    pub fn recorded_before(mut self, at: DateTime<Utc>) -> Self {
        self.recorded_before = Some(at);
        self
    }

    /// The aggregate type, when the scope has one.
    pub fn type_filter(&self) -> Option<&str> {
        self.aggregate_type.as_deref()
    }

    /// The aggregate ids, sorted and without duplicates; empty for "every id".
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The time range `[from, before)` of `recorded_at`; `None` for an open end.
    pub fn time_range(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        (self.recorded_from, self.recorded_before)
    }

    /// Refuses ids without an aggregate type, and an empty time range.
    pub fn check(&self) -> Result<(), BackupError> {
        if !self.ids.is_empty() && self.aggregate_type.is_none() {
            return Err(BackupError::InvalidScope(
                "aggregate ids need an aggregate type".into(),
            ));
        }
        if let (Some(from), Some(before)) = (self.recorded_from, self.recorded_before)
            && from >= before
        {
            return Err(BackupError::InvalidScope(format!(
                "the time range is empty: from {from} is not before {before}"
            )));
        }
        Ok(())
    }

    /// Whether `at` is inside the time range.
    fn in_time_range(&self, at: DateTime<Utc>) -> bool {
        self.recorded_from.is_none_or(|from| at >= from)
            && self.recorded_before.is_none_or(|before| at < before)
    }

    /// Whether `event` belongs to the scope.
    fn includes(&self, event: &RecordedEvent) -> bool {
        self.aggregate_type
            .as_deref()
            .is_none_or(|t| t == event.stream.aggregate_type())
            && (self.ids.is_empty()
                || self
                    .ids
                    .binary_search_by(|id| id.as_str().cmp(event.stream.aggregate_id()))
                    .is_ok())
            && self.in_time_range(event.recorded_at)
    }
}

/// What an export or an import is doing, for [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the store and writing the file.
    Export,
    /// Import's first pass: reading and checking the whole file, writing nothing.
    Verify,
    /// Import's second pass: writing into the store.
    Write,
}

/// How far an export or import has come; handed to the progress callback after every page of
/// events (export) or every few thousand frames (import), and once at the end of each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub phase: Phase,
    /// Events written to the file (export) or read from it in this pass (import).
    pub events: u64,
    /// Snapshots written or read so far.
    pub snapshots: u64,
    /// Bytes of the file written or read so far (compressed, as on disk).
    pub bytes: u64,
}
