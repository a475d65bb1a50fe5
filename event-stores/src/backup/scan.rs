//! The first pass of an import: every frame of the file checked, in order, as the stores
//! would check it, and each stream's version in the target; nothing is written.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::format::{EventFrame, HeaderFrame, invalid, malformed, stream_id};
use super::reader::{BackupReader, Item};
use super::{BackupError, BackupScope, Phase, Progress};
use crate::event_store::EventStore;
use crate::invalid_input::InvalidInput;
use crate::limits::StoreLimits;
use crate::stream::StreamId;

/// What a backup file holds, from its header and trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The format version.
    pub format_version: u32,
    /// When the export started.
    pub created_at: DateTime<Utc>,
    /// The program that wrote it.
    pub tool: String,
    /// The scope it was exported with.
    pub scope: BackupScope,
    /// Streams with events in the file.
    pub streams: u64,
    /// Events in the file.
    pub events: u64,
    /// Snapshots in the file.
    pub snapshots: u64,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// One stream of the file, as the first pass found it and the second writes it.
#[derive(Debug, Clone)]
pub(super) struct StreamPlan {
    /// First and last version in the file.
    pub(super) first: u64,
    pub(super) last: u64,
    /// The target's version when the first pass met the stream.
    pub(super) stored: u64,
    /// Chained hash of the file's event ids at versions the target already has.
    pub(super) overlap: u64,
    /// The file's versions up to here are in the target already and are skipped.
    pub(super) present_through: u64,
    /// The second pass: the last version queued for writing (or skipped).
    pub(super) queued: u64,
}

/// What the first pass found.
pub(super) struct Scan {
    pub(super) header: HeaderFrame,
    pub(super) summary: BackupSummary,
    pub(super) streams: HashMap<StreamId, StreamPlan>,
}

/// Order-sensitive hash of a run of event ids, kept in 8 bytes per stream.
pub(super) fn chain(hash: u64, id: Uuid) -> u64 {
    xxh3_64_with_seed(id.as_bytes(), hash)
}

/// The first pass: every frame, in order, checked, each event and snapshot as the stores
/// check them (against `limits`); with a store, each stream's version there.
pub(super) async fn scan(
    input: impl Read,
    store: Option<&dyn EventStore>,
    limits: &StoreLimits,
    mut progress: impl FnMut(Progress),
) -> Result<Scan, BackupError> {
    let mut reader = BackupReader::open(input)?;
    let mut streams: HashMap<StreamId, StreamPlan> = HashMap::new();
    let mut last_stream: Option<StreamId> = None;
    let mut event_ids: HashSet<Uuid> = HashSet::new();
    let mut read = (0u64, 0u64);
    while let Some(item) = reader.next()? {
        match item {
            Item::Event(frame, event) => {
                read.0 += 1;
                let new = event.to_new_event(frame)?;
                limits
                    .check_append(std::slice::from_ref(&new))
                    .map_err(|source| invalid(frame, source))?;
                if !event_ids.insert(new.event_id) {
                    return Err(invalid(frame, InvalidInput::DuplicateEventId(new.event_id)));
                }
                let stream = reuse_stream(&mut last_stream, &event, frame)?;
                match streams.get_mut(&stream) {
                    Some(plan) => {
                        if event.version != plan.last + 1 {
                            return Err(BackupError::NotContiguous {
                                stream,
                                expected: plan.last + 1,
                                found: event.version,
                            });
                        }
                        plan.last = event.version;
                        if event.version <= plan.stored {
                            plan.overlap = chain(plan.overlap, event.event_id);
                        }
                    }
                    None => {
                        let stored = match store {
                            Some(store) => store.stream_version(&stream).await?,
                            None => 0,
                        };
                        let overlap = if event.version <= stored {
                            chain(0, event.event_id)
                        } else {
                            0
                        };
                        let plan = StreamPlan {
                            first: event.version,
                            last: event.version,
                            stored,
                            overlap,
                            present_through: 0,
                            queued: 0,
                        };
                        streams.insert(stream, plan);
                    }
                }
            }
            Item::Snapshot(frame, snapshot) => {
                read.1 += 1;
                let stream = stream_id(&snapshot.aggregate_type, &snapshot.aggregate_id, frame)?;
                let record = snapshot.to_record(stream.clone(), frame)?;
                limits
                    .check_snapshot(&record)
                    .map_err(|source| invalid(frame, source))?;
                let Some(plan) = streams.get(&stream) else {
                    return Err(malformed(
                        frame,
                        format!("a snapshot of {stream}, which has no events in the backup"),
                    ));
                };
                if snapshot.version > plan.last {
                    return Err(malformed(
                        frame,
                        format!(
                            "the snapshot of {stream} at version {} is past the backup's last \
                             event of it ({})",
                            snapshot.version, plan.last
                        ),
                    ));
                }
            }
        }
        if (read.0 + read.1).is_multiple_of(4096) {
            progress(reader.progress(Phase::Verify, read));
        }
    }
    progress(reader.progress(Phase::Verify, read));
    let trailer = reader.trailer.take().ok_or(BackupError::Truncated {
        frames: reader.frames.frames(),
    })?;
    if trailer.streams != streams.len() as u64 {
        return Err(malformed(
            reader.frames.frames().saturating_sub(1),
            format!(
                "the trailer counts {} streams, the file has {}",
                trailer.streams,
                streams.len()
            ),
        ));
    }
    let summary = BackupSummary {
        format_version: reader.header.format,
        created_at: DateTime::from_timestamp_micros(reader.header.created_at_us)
            .unwrap_or_default(),
        tool: reader.header.tool.clone(),
        scope: reader.header.scope.to_scope(),
        streams: trailer.streams,
        events: trailer.events,
        snapshots: trailer.snapshots,
        bytes: reader.frames.bytes(),
    };
    Ok(Scan {
        header: reader.header,
        summary,
        streams,
    })
}

/// The stream of `event`, reusing the previous one when it is the same (consecutive events
/// mostly are), so the first pass does not allocate an id per event.
pub(super) fn reuse_stream(
    last: &mut Option<StreamId>,
    event: &EventFrame,
    frame: u64,
) -> Result<StreamId, BackupError> {
    if let Some(stream) = last
        && stream.aggregate_type() == event.aggregate_type
        && stream.aggregate_id() == event.aggregate_id
    {
        return Ok(stream.clone());
    }
    let stream = stream_id(&event.aggregate_type, &event.aggregate_id, frame)?;
    *last = Some(stream.clone());
    Ok(stream)
}
