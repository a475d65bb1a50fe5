//! Writing a backup: the scope's events page by page, then the snapshots of the streams met.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::format::{EventFrame, Frame, FrameWriter, HeaderFrame, ScopeFrame, SnapshotFrame};
use super::{BackupError, BackupScope, Phase, Progress};
use crate::event::RecordedEvent;
use crate::event_store::{DEFAULT_PAGE_SIZE, EventStore, ReadQuery};
use crate::snapshot_store::SnapshotStore;
use crate::stream::StreamId;

/// How [`export`] reads and compresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Events read from the store per call (and so held in memory at once).
    pub page_size: usize,
    /// zstd level, 1 (fastest) to 19 (smallest); 3 by default.
    pub compression_level: i32,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            page_size: DEFAULT_PAGE_SIZE,
            compression_level: 3,
        }
    }
}

impl ExportOptions {
    /// Sets the page size (at least 1).
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Sets the zstd level.
    pub fn compression_level(mut self, level: i32) -> Self {
        self.compression_level = level;
        self
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Streams with at least one event in the file.
    pub streams: u64,
    /// Events written.
    pub events: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// The file's size in bytes.
    pub bytes: u64,
    /// How long the export took.
    pub elapsed: Duration,
}

/// The versions of one stream written to the file.
#[derive(Debug, Clone, Copy)]
struct Written {
    first: u64,
    last: u64,
}

/// Writes the events of `scope` from `events`, and the snapshots in `snapshots` of the streams
/// met at the versions written, to `out` as one backup file (see [the format](super)).
///
/// Without ids, the whole store is read in position order with
/// [`EventStore::read_all`] and filtered; with ids, each stream is read on its own. Memory
/// holds one page of events and, per stream met, its first and last version written. `out`
/// is written synchronously from this task (zstd compresses in the caller's thread); give it
/// a buffered or in-memory writer. `progress` is called after every page.
pub async fn export(
    events: &dyn EventStore,
    snapshots: &dyn SnapshotStore,
    scope: &BackupScope,
    out: impl Write,
    options: &ExportOptions,
    mut progress: impl FnMut(Progress),
) -> Result<ExportReport, BackupError> {
    let started = Instant::now();
    scope.check()?;
    let mut file = ExportFile {
        writer: FrameWriter::start(out, options.compression_level)?,
        streams: BTreeMap::new(),
        events: 0,
        snapshots: 0,
    };
    file.writer.write(&Frame::Header(HeaderFrame {
        format: super::FORMAT_VERSION,
        created_at_us: Utc::now().timestamp_micros(),
        tool: concat!("event-stores ", env!("CARGO_PKG_VERSION")).to_owned(),
        scope: ScopeFrame::from_scope(scope),
    }))?;
    let page_size = options.page_size.max(1);

    match scope.type_filter() {
        Some(aggregate_type) if !scope.ids().is_empty() => {
            for id in scope.ids() {
                let stream = StreamId::new(aggregate_type, id).map_err(|e| {
                    BackupError::InvalidScope(format!("{aggregate_type}/{id}: {e}"))
                })?;
                file.export_stream(events, &stream, scope, page_size, &mut progress)
                    .await?;
            }
        }
        _ => {
            let mut after = 0;
            loop {
                let page = events.read_all(after, page_size).await?;
                let Some(last) = page.last() else { break };
                after = last.position;
                file.write_events(page.iter().filter(|e| scope.includes(e)))?;
                progress(file.progress(Phase::Export));
            }
        }
    }

    file.export_snapshots(snapshots).await?;
    progress(file.progress(Phase::Export));
    let (streams, events, snapshots) = (file.streams.len() as u64, file.events, file.snapshots);
    let bytes = file.writer.finish(streams, events, snapshots)?;
    progress(Progress {
        phase: Phase::Export,
        events,
        snapshots,
        bytes,
    });
    Ok(ExportReport {
        streams,
        events,
        snapshots,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// An export under way.
struct ExportFile<W: Write> {
    writer: FrameWriter<W>,
    /// Ordered, so the snapshots come out in a stable order.
    streams: BTreeMap<StreamId, Written>,
    events: u64,
    snapshots: u64,
}

impl<W: Write> ExportFile<W> {
    fn progress(&self, phase: Phase) -> Progress {
        Progress {
            phase,
            events: self.events,
            snapshots: self.snapshots,
            bytes: self.writer.bytes(),
        }
    }

    fn write_events<'e>(
        &mut self,
        events: impl Iterator<Item = &'e RecordedEvent>,
    ) -> Result<(), BackupError> {
        for event in events {
            self.writer
                .write(&Frame::Event(EventFrame::from_recorded(event)))?;
            self.events += 1;
            match self.streams.get_mut(&event.stream) {
                Some(written) => written.last = event.version,
                None => {
                    self.streams.insert(
                        event.stream.clone(),
                        Written {
                            first: event.version,
                            last: event.version,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// One stream's events in the scope's time range. `recorded_at` never decreases within a
    /// stream, so the range is a contiguous run and the read stops at its end.
    async fn export_stream(
        &mut self,
        events: &dyn EventStore,
        stream: &StreamId,
        scope: &BackupScope,
        page_size: usize,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(), BackupError> {
        let (_, before) = scope.time_range();
        let mut after = 0;
        loop {
            let page = events
                .read_stream(stream, ReadQuery::after(after).page_size(page_size))
                .await?;
            let Some(last) = page.last() else { break };
            after = last.version;
            let past_range = before.is_some_and(|before| last.recorded_at >= before);
            self.write_events(page.iter().filter(|e| scope.includes(e)))?;
            progress(self.progress(Phase::Export));
            if page.len() < page_size || past_range {
                break;
            }
        }
        Ok(())
    }

    /// The snapshots of every stream met at the versions written, oldest first; and, for a
    /// delta among them whose base is older than the stream's first version in the file (a
    /// time-range export), that base too, so the file holds what a reader needs to decode it.
    async fn export_snapshots(&mut self, snapshots: &dyn SnapshotStore) -> Result<(), BackupError> {
        let streams: Vec<(StreamId, Written)> =
            self.streams.iter().map(|(s, w)| (s.clone(), *w)).collect();
        for (stream, written) in streams {
            let mut records = snapshots.list(&stream, written.first, written.last).await?;
            let outside_bases: Vec<u64> = records
                .iter()
                .filter_map(|r| r.base.map(|b| b.version))
                .filter(|v| *v < written.first)
                .collect();
            for version in outside_bases {
                if !records.iter().any(|r| r.version == version) {
                    records.extend(snapshots.list(&stream, version, version).await?);
                }
            }
            records.sort_by_key(|r| r.version);
            for record in &records {
                self.writer
                    .write(&Frame::Snapshot(SnapshotFrame::from_record(record)))?;
                self.snapshots += 1;
            }
        }
        Ok(())
    }
}
