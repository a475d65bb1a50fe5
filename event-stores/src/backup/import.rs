//! Reading a backup back: a first pass that checks the whole file (and the target store) and
//! writes nothing, then a second pass that writes.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use super::scan::{BackupSummary, StreamPlan, chain, reuse_stream, scan};
use futures::StreamExt;

use super::format::{EventFrame, SnapshotFrame, malformed, stream_id};
use super::reader::{BackupReader, Item};
use super::{BackupError, Phase, Progress};
use crate::event::NewEvent;
use crate::event_store::{EventStore, ReadQuery, StreamPages};
use crate::limits::StoreLimits;
use crate::snapshot::SnapshotRecord;
use crate::snapshot_store::SnapshotStore;
use crate::stream::StreamId;

/// How [`import`] writes.
///
/// The batch options are a performance knob, never a reason to fail: each append is cut to fit
/// [`limits`](Self::limits) as well (at most `max_events_per_append` events and
/// `max_append_bytes` payload bytes), whatever `batch_events` and `max_pending_bytes` say, so
/// an import never sends an append the target refuses for its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Most events in one append (0 counts as 1). Appends are also kept within the
    /// `max_events_per_append` and `max_append_bytes` of [`limits`](Self::limits): a larger
    /// value is cut down to them, not refused.
    pub batch_events: usize,
    /// Appends (to different streams) or snapshot saves in flight at once (0 counts as 1).
    pub concurrency: usize,
    /// Payload bytes held before they are written, whatever the batch sizes.
    pub max_pending_bytes: usize,
    /// The target stores' limits: the first pass checks every event (its payload) and every
    /// snapshot (its size) of the file against them, so that a file the stores would refuse
    /// a part of is refused ([`BackupError::InvalidInput`]) before anything is written, and
    /// the second pass cuts its appends to fit them (see [`batch_events`](Self::batch_events)).
    /// By default [`StoreLimits::default()`], the stores' own default; set the target's when it
    /// has others (a PostgreSQL target's are `PgEventStore::limits()`).
    pub limits: StoreLimits,
}

impl ImportOptions {
    /// Most events in one append: `batch_events` within the target's `max_events_per_append`,
    /// and at least 1.
    fn events_per_append(&self) -> usize {
        self.batch_events
            .min(self.limits.max_events_per_append)
            .max(1)
    }
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            batch_events: 1_000,
            concurrency: 8,
            max_pending_bytes: 32 * 1024 * 1024,
            limits: StoreLimits::default(),
        }
    }
}

/// Limits no file exceeds: what [`verify`] checks without a target, whose limits it does not
/// know (the rest of each check still applies: names, ids, versions).
const NO_SIZE_LIMITS: StoreLimits = StoreLimits {
    max_event_payload_bytes: usize::MAX,
    max_events_per_append: usize::MAX,
    max_append_bytes: usize::MAX,
    max_snapshot_bytes: usize::MAX,
};

/// What [`import`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The file.
    pub summary: BackupSummary,
    /// Events appended to the target.
    pub events_written: u64,
    /// Events skipped because the target already held them (same versions, same ids).
    pub events_already_present: u64,
    /// Streams that received events.
    pub streams_written: u64,
    /// Streams whose events of the file were all in the target already.
    pub streams_already_present: u64,
    /// Snapshots saved.
    pub snapshots_saved: u64,
    /// The first pass: reading and checking the file and the target's streams.
    pub verify_time: Duration,
    /// The second pass: writing.
    pub write_time: Duration,
}

/// Checks a backup file on its own (every check of [`import`]'s first pass but those against
/// a store and its size limits), streaming, and returns what it holds.
pub async fn verify(
    input: impl Read,
    progress: impl FnMut(Progress),
) -> Result<BackupSummary, BackupError> {
    Ok(scan(input, None, &NO_SIZE_LIMITS, progress).await?.summary)
}

/// [`import`] from the file at `path`.
pub async fn import_file(
    path: &Path,
    events: &dyn EventStore,
    snapshots: &dyn SnapshotStore,
    options: &ImportOptions,
    progress: impl FnMut(Progress),
) -> Result<ImportReport, BackupError> {
    import(
        || std::fs::File::open(path),
        events,
        snapshots,
        options,
        progress,
    )
    .await
}

/// Imports a backup into `events` and `snapshots`, which may be empty or not; see [the
/// rules](super#what-import-checks-and-when-a-stored-stream-is-a-conflict).
///
/// `open` is called twice and must give the same bytes both times: the first pass checks the
/// whole file and each of its streams against the store and writes nothing, the second writes.
/// Memory holds a few numbers per stream, each event id of the file during the first pass (to
/// find one the file holds twice, which a store would refuse half way through the second), and
/// at most `options.max_pending_bytes` of payloads (or `batch_events × concurrency` events).
/// Nobody else should write the imported streams meanwhile: such a write makes an append fail
/// with a version conflict rather than be overwritten.
pub async fn import<R: Read>(
    mut open: impl FnMut() -> io::Result<R>,
    events: &dyn EventStore,
    snapshots: &dyn SnapshotStore,
    options: &ImportOptions,
    mut progress: impl FnMut(Progress),
) -> Result<ImportReport, BackupError> {
    let started = Instant::now();
    let mut scan = scan(open()?, Some(events), &options.limits, &mut progress).await?;
    decide(events, &mut scan.streams).await?;
    let verify_time = started.elapsed();

    let started = Instant::now();
    let mut writer = Writer {
        events,
        snapshots,
        options,
        streams: scan.streams,
        pending: HashMap::new(),
        pending_events: 0,
        pending_bytes: 0,
        pending_snapshots: Vec::new(),
        events_written: 0,
        events_already_present: 0,
        snapshots_saved: 0,
        last_stream: None,
    };
    let mut reader = BackupReader::open(open()?)?;
    if reader.header.created_at_us != scan.header.created_at_us {
        return Err(changed(0));
    }
    let mut read = (0u64, 0u64);
    while let Some(item) = reader.next()? {
        match item {
            Item::Event(frame, event) => {
                read.0 += 1;
                writer.event(frame, &event).await?;
            }
            Item::Snapshot(frame, snapshot) => {
                read.1 += 1;
                writer.snapshot(frame, &snapshot).await?;
            }
        }
        if (read.0 + read.1).is_multiple_of(4096) {
            progress(reader.progress(Phase::Write, read));
        }
    }
    writer.flush_events().await?;
    writer.flush_snapshots().await?;
    progress(reader.progress(Phase::Write, read));

    let streams_written = writer
        .streams
        .values()
        .filter(|plan| plan.queued > plan.present_through)
        .count() as u64;
    let streams_already_present = writer
        .streams
        .values()
        .filter(|plan| plan.present_through == plan.last)
        .count() as u64;
    Ok(ImportReport {
        summary: scan.summary,
        events_written: writer.events_written,
        events_already_present: writer.events_already_present,
        streams_written,
        streams_already_present,
        snapshots_saved: writer.snapshots_saved,
        verify_time,
        write_time: started.elapsed(),
    })
}

/// Decides, for each stream, what the target already has (see the module documentation);
/// fails with the first conflict in stream order, before anything is written.
async fn decide(
    store: &dyn EventStore,
    streams: &mut HashMap<StreamId, StreamPlan>,
) -> Result<(), BackupError> {
    let mut ids: Vec<&StreamId> = streams.keys().collect();
    ids.sort();
    let mut present = Vec::new();
    for stream in ids {
        let plan = &streams[stream];
        if plan.stored + 1 < plan.first {
            return Err(BackupError::Conflict {
                stream: stream.clone(),
                stored_version: plan.stored,
                first_in_file: plan.first,
                detail: " (the versions in between are in neither)",
            });
        }
        let through = plan.stored.min(plan.last);
        if through >= plan.first {
            let query = ReadQuery::after(plan.first - 1)
                .up_to_version(through)
                .page_size(1_000);
            let mut pages = StreamPages::new(store, stream, query);
            let mut hash = 0;
            while let Some(page) = pages.next_page().await? {
                hash = page.iter().fold(hash, |h, e| chain(h, e.event_id));
            }
            if hash != plan.overlap {
                return Err(BackupError::Conflict {
                    stream: stream.clone(),
                    stored_version: plan.stored,
                    first_in_file: plan.first,
                    detail: " (the store holds other events at the backup's versions)",
                });
            }
        }
        present.push((stream.clone(), through.max(plan.first - 1)));
    }
    for (stream, through) in present {
        if let Some(plan) = streams.get_mut(&stream) {
            plan.present_through = through;
            plan.queued = through;
        }
    }
    Ok(())
}

/// One stream's next append: its events, after the stream's version `expected`, within the
/// target's limits.
#[derive(Default)]
struct Batch {
    expected: u64,
    events: Vec<NewEvent>,
    /// Their payload bytes, all together.
    bytes: usize,
}

/// The second pass's writes, batched.
struct Writer<'a> {
    events: &'a dyn EventStore,
    snapshots: &'a dyn SnapshotStore,
    options: &'a ImportOptions,
    streams: HashMap<StreamId, StreamPlan>,
    /// Each stream's next append.
    pending: HashMap<StreamId, Batch>,
    pending_events: usize,
    pending_bytes: usize,
    pending_snapshots: Vec<SnapshotRecord>,
    events_written: u64,
    events_already_present: u64,
    snapshots_saved: u64,
    last_stream: Option<StreamId>,
}

impl Writer<'_> {
    async fn event(&mut self, frame: u64, event: &EventFrame) -> Result<(), BackupError> {
        let stream = reuse_stream(&mut self.last_stream, event, frame)?;
        let plan = self
            .streams
            .get_mut(&stream)
            .ok_or_else(|| changed(frame))?;
        if event.version <= plan.present_through {
            self.events_already_present += 1;
            return Ok(());
        }
        if event.version != plan.queued + 1 {
            return Err(changed(frame));
        }
        let expected = plan.queued;
        plan.queued = event.version;
        let new = event.to_new_event(frame)?;
        let size = new.payload.len();
        let options = self.options;
        // An event that would take its stream's append over the target's byte limit starts the
        // next one. (Alone it fits: the first pass checked each event against the limits.)
        if self
            .pending
            .get(&stream)
            .is_some_and(|batch| batch.bytes.saturating_add(size) > options.limits.max_append_bytes)
        {
            self.flush_events().await?;
        }
        self.pending_bytes += size;
        self.pending_events += 1;
        let batch = self.pending.entry(stream).or_insert_with(|| Batch {
            expected,
            ..Batch::default()
        });
        batch.events.push(new);
        batch.bytes += size;
        let per_append = options.events_per_append();
        if batch.events.len() >= per_append
            || self.pending_events >= per_append.saturating_mul(options.concurrency.max(1))
            || self.pending_bytes >= options.max_pending_bytes
        {
            self.flush_events().await?;
        }
        Ok(())
    }

    async fn snapshot(&mut self, frame: u64, snapshot: &SnapshotFrame) -> Result<(), BackupError> {
        // Snapshots follow all events: whatever is pending goes first.
        self.flush_events().await?;
        let stream = stream_id(&snapshot.aggregate_type, &snapshot.aggregate_id, frame)?;
        if !self.streams.contains_key(&stream) {
            return Err(changed(frame));
        }
        let record = snapshot.to_record(stream, frame)?;
        self.pending_bytes += record.bytes.len();
        self.pending_snapshots.push(record);
        if self.pending_snapshots.len() >= self.options.concurrency.max(1)
            || self.pending_bytes >= self.options.max_pending_bytes
        {
            self.flush_snapshots().await?;
        }
        Ok(())
    }

    /// Appends every pending batch, one per stream, several streams at once. A stream's
    /// expected version is the last one written before the batch: a concurrent writer makes
    /// the append fail instead of interleaving.
    async fn flush_events(&mut self) -> Result<(), BackupError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let store = self.events;
        let mut appends = futures::stream::iter(self.pending.drain())
            .map(|(stream, batch)| async move {
                let count = batch.events.len() as u64;
                store
                    .append(&stream, batch.expected, batch.events)
                    .await
                    .map(|_| count)
            })
            .buffer_unordered(self.options.concurrency.max(1));
        while let Some(appended) = appends.next().await {
            self.events_written += appended?;
        }
        self.pending_events = 0;
        self.pending_bytes = 0;
        Ok(())
    }

    async fn flush_snapshots(&mut self) -> Result<(), BackupError> {
        let store = self.snapshots;
        let mut saves = futures::stream::iter(self.pending_snapshots.drain(..))
            .map(|record| store.save(record))
            .buffer_unordered(self.options.concurrency.max(1));
        while let Some(saved) = saves.next().await {
            saved?;
            self.snapshots_saved += 1;
        }
        self.pending_bytes = 0;
        Ok(())
    }
}

/// The second pass met something the first did not see.
fn changed(frame: u64) -> BackupError {
    malformed(
        frame,
        "the file changed between the import's two passes".to_owned(),
    )
}
