//! Rebuilding state from the stores: the newest valid snapshot, then the events after it.
//!
//! Shared by actor activation (target: the stream's end) and reconstruction (target: a
//! version or a time). A snapshot is trusted only after every check passes — same state
//! schema version, consistent sizes, checksum, codec and decompression, decoding, and the stored event at its
//! version having its `last_event_id` (checked on the first page of the tail read, so it costs
//! no extra round trip). A delta snapshot is read with its base, which must be the very full
//! snapshot it names (see [`open`]). A snapshot that fails is logged, counted and skipped for the
//! next older one; with none left, the whole stream is replayed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use event_stores::{
    EventStore, ReadQuery, RecordedEvent, SnapshotRecord, SnapshotStore, StreamId, StreamPages,
};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::dedup::{DedupWindow, RecentCommands};
use crate::error::ActivationError;
use crate::metrics::{ActivationReport, AggregateMetrics, SnapshotOrigin};
use crate::upcast;

mod open;

use open::{Opened, open_record};
pub(crate) use open::{open_base, open_snapshot};

/// Every check activation makes of `record` (with its base, for a delta) and that it matches
/// the stream's event at its version; `Ok` when activation would start from it.
pub(crate) async fn verify_record<A: Aggregate>(
    events: &dyn EventStore,
    snapshots: &dyn SnapshotStore,
    record: SnapshotRecord,
) -> Result<(), String> {
    let (stream, version, last_event_id) =
        (record.stream.clone(), record.version, record.last_event_id);
    open_record::<A>(snapshots, record).await?;
    let query = ReadQuery::after(version.saturating_sub(1))
        .up_to_version(version)
        .page_size(1);
    let own = events
        .read_stream(&stream, query)
        .await
        .map_err(|e| format!("its event cannot be read: {e}"))?;
    match own.first() {
        Some(event) if event.version == version && event.event_id == last_event_id => Ok(()),
        Some(event) => Err(format!(
            "last_event_id {last_event_id} does not match event {} at version {}",
            event.event_id, event.version
        )),
        None => Err(format!("stream has no event at version {version}")),
    }
}

/// How far to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The stream's current end.
    Latest,
    /// The state right after this version.
    Version(u64),
    /// The state with every event recorded at or before this instant.
    Time(DateTime<Utc>),
}

/// A rebuilt state.
pub(crate) struct Hydrated<A: Aggregate> {
    pub(crate) state: A::State,
    pub(crate) version: u64,
    pub(crate) last_event_id: Option<Uuid>,
    pub(crate) last_recorded_at: Option<DateTime<Utc>>,
    pub(crate) snapshot: Option<SnapshotOrigin>,
    pub(crate) snapshots_skipped: u32,
    pub(crate) events_replayed: u64,
    /// Payload bytes of the replayed events (for size-based snapshot strategies).
    pub(crate) event_bytes_replayed: u64,
    pub(crate) elapsed: Duration,
    /// The recent commands: the snapshot's window, extended by the replayed events.
    pub(crate) recent: RecentCommands,
}

impl<A: Aggregate> Hydrated<A> {
    /// A stream with no events, presumed without reading (see [`Aggregate::is_creation`]).
    pub(crate) fn presumed_new() -> Self {
        Self {
            state: A::State::default(),
            version: 0,
            last_event_id: None,
            last_recorded_at: None,
            snapshot: None,
            snapshots_skipped: 0,
            events_replayed: 0,
            event_bytes_replayed: 0,
            elapsed: Duration::ZERO,
            recent: RecentCommands::default(),
        }
    }

    pub(crate) fn report(&self) -> ActivationReport {
        ActivationReport {
            from_snapshot: self.snapshot,
            snapshots_skipped: self.snapshots_skipped,
            events_replayed: self.events_replayed,
            version: self.version,
            elapsed: self.elapsed,
            from_resident: false,
        }
    }
}

/// Rebuilds the state of `stream` up to `target`.
pub(crate) async fn hydrate<A: Aggregate>(
    events: &dyn EventStore,
    snapshots: &dyn SnapshotStore,
    stream: &StreamId,
    target: Target,
    page_size: usize,
    window: DedupWindow,
    metrics: &AggregateMetrics,
) -> Result<Hydrated<A>, ActivationError> {
    let started = Instant::now();
    let mut skipped = 0u32;
    // The newest snapshot and the events from its version on, in one read where the stores
    // share a database; otherwise the snapshot first, then the events.
    let (mut candidate, mut preread) = match target {
        Target::Latest => match events
            .read_start(stream, snapshots, page_size.saturating_add(1))
            .await
            .map_err(|source| ActivationError::Store {
                stream: stream.clone(),
                source,
            })? {
            Some(start) => (start.snapshot, Some(start.events)),
            None => (first_candidate(snapshots, stream, target).await, None),
        },
        _ => (first_candidate(snapshots, stream, target).await, None),
    };

    let mut start = Start::<A>::from_scratch();
    match (&candidate, preread.take()) {
        // No snapshot: what was read is the stream's beginning.
        (None, Some(first_page)) => {
            start.complete = first_page.len() <= page_size;
            start.first_page = first_page;
        }
        (_, read) => preread = read,
    }
    while let Some(record) = candidate {
        let older_than = record.version;
        let read = preread.take();
        let restored = match open_record::<A>(snapshots, record).await {
            Ok(opened) => {
                restore::<A>(events, stream, opened, target, page_size, window, read).await?
            }
            Err(reason) => Err(Rejection::Invalid(reason)),
        };
        match restored {
            Ok(restored) => {
                start = restored;
                break;
            }
            Err(Rejection::Invalid(reason)) => {
                skipped += 1;
                metrics.snapshot_skipped_invalid();
                tracing::warn!(%stream, version = older_than, %reason, "snapshot skipped as invalid");
            }
            Err(Rejection::PastTarget) => {}
        }
        candidate = older_snapshot(snapshots, stream, older_than).await;
    }

    let Start {
        mut state,
        mut version,
        mut last_event_id,
        mut last_recorded_at,
        snapshot,
        first_page,
        complete,
        mut events_replayed,
        mut recent,
    } = start;
    let mut event_bytes_replayed = 0u64;
    for event in &first_page {
        event_bytes_replayed += event.payload.len() as u64;
        apply_recorded::<A>(&mut state, &mut recent, window, event)?;
        version = event.version;
        last_event_id = Some(event.event_id);
        last_recorded_at = Some(event.recorded_at);
        events_replayed += 1;
    }
    if !complete {
        let query = tail_query(version, target, page_size);
        let mut pages = StreamPages::new(events, stream, query);
        while let Some(page) = pages
            .next_page()
            .await
            .map_err(|source| ActivationError::Store {
                stream: stream.clone(),
                source,
            })?
        {
            for event in &page {
                apply_recorded::<A>(&mut state, &mut recent, window, event)?;
                events_replayed += 1;
                event_bytes_replayed += event.payload.len() as u64;
            }
            if let Some(last) = page.last() {
                version = last.version;
                last_event_id = Some(last.event_id);
                last_recorded_at = Some(last.recorded_at);
            }
        }
    }
    Ok(Hydrated {
        state,
        version,
        last_event_id,
        last_recorded_at,
        snapshot,
        snapshots_skipped: skipped,
        events_replayed,
        event_bytes_replayed,
        elapsed: started.elapsed(),
        recent,
    })
}

/// The state a replay starts from: default, or a verified snapshot plus the first tail page.
struct Start<A: Aggregate> {
    state: A::State,
    version: u64,
    last_event_id: Option<Uuid>,
    last_recorded_at: Option<DateTime<Utc>>,
    snapshot: Option<SnapshotOrigin>,
    first_page: Vec<RecordedEvent>,
    /// Whether `first_page` reached the end of what is to be replayed.
    complete: bool,
    events_replayed: u64,
    recent: RecentCommands,
}

impl<A: Aggregate> Start<A> {
    fn from_scratch() -> Self {
        Self {
            state: A::State::default(),
            version: 0,
            last_event_id: None,
            last_recorded_at: None,
            snapshot: None,
            first_page: Vec::new(),
            complete: false,
            events_replayed: 0,
            recent: RecentCommands::default(),
        }
    }
}

enum Rejection {
    /// The snapshot fails a check: count it and try an older one.
    Invalid(String),
    /// The snapshot is valid but lies beyond a time target.
    PastTarget,
}

fn tail_query(after: u64, target: Target, page_size: usize) -> ReadQuery {
    let query = ReadQuery::after(after).page_size(page_size);
    match target {
        Target::Latest => query,
        Target::Version(v) => query.up_to_version(v),
        Target::Time(t) => query.up_to_time(t),
    }
}

async fn first_candidate(
    snapshots: &dyn SnapshotStore,
    stream: &StreamId,
    target: Target,
) -> Option<SnapshotRecord> {
    let loaded = match target {
        Target::Latest => snapshots.load_latest(stream).await,
        Target::Version(v) => snapshots.load_at_or_before_version(stream, v).await,
        Target::Time(t) => snapshots.load_at_or_before_time(stream, t).await,
    };
    unavailable_is_none(stream, loaded)
}

async fn older_snapshot(
    snapshots: &dyn SnapshotStore,
    stream: &StreamId,
    than: u64,
) -> Option<SnapshotRecord> {
    if than <= 1 {
        return None;
    }
    unavailable_is_none(
        stream,
        snapshots.load_at_or_before_version(stream, than - 1).await,
    )
}

/// A snapshot store failure must not block activation: the events alone are enough.
fn unavailable_is_none(
    stream: &StreamId,
    loaded: event_stores::StoreResult<Option<SnapshotRecord>>,
) -> Option<SnapshotRecord> {
    loaded.unwrap_or_else(|error| {
        tracing::warn!(%stream, %error, "snapshot store failed; replaying events instead");
        None
    })
}

/// Checks an opened snapshot against the stream and, when it passes, returns the state with
/// the first tail page (whose first event is the snapshot's own, used for the `last_event_id`
/// check). `preread` is that page when it came with the snapshot ([`EventStore::read_start`]).
async fn restore<A: Aggregate>(
    events: &dyn EventStore,
    stream: &StreamId,
    opened: Opened<A>,
    target: Target,
    page_size: usize,
    window: DedupWindow,
    preread: Option<Vec<RecordedEvent>>,
) -> Result<Result<Start<A>, Rejection>, ActivationError> {
    let Opened {
        record,
        state,
        commands,
    } = opened;
    // No stream has an event at version 0: such a record (a damaged archive file) is invalid.
    let Some(before_own) = record.version.checked_sub(1) else {
        return Ok(Err(Rejection::Invalid(
            "a snapshot at version 0 names no event".into(),
        )));
    };
    // Read from the snapshot's own event: one page both verifies it and starts the tail.
    let mut page = match preread {
        Some(page) => page,
        None => {
            let query = tail_query(before_own, target, page_size.saturating_add(1));
            events
                .read_stream(stream, query)
                .await
                .map_err(|source| ActivationError::Store {
                    stream: stream.clone(),
                    source,
                })?
        }
    };
    let complete = page.len() <= page_size;
    let Some(own) = page.first() else {
        // No event at the snapshot's version within the target: past a time target, or the
        // stream is shorter than the snapshot claims.
        return Ok(Err(match target {
            Target::Time(_) if record.version <= stream_end(events, stream).await? => {
                Rejection::PastTarget
            }
            _ => Rejection::Invalid(format!("stream has no event at version {}", record.version)),
        }));
    };
    if own.version != record.version || own.event_id != record.last_event_id {
        return Ok(Err(Rejection::Invalid(format!(
            "last_event_id {} does not match event {} at version {}",
            record.last_event_id, own.event_id, own.version
        ))));
    }
    let own_recorded_at = own.recorded_at;
    page.remove(0);
    Ok(Ok(Start {
        state,
        version: record.version,
        last_event_id: Some(record.last_event_id),
        last_recorded_at: Some(own_recorded_at),
        snapshot: Some(SnapshotOrigin {
            version: record.version,
            taken_at: record.taken_at,
            size: record.uncompressed_size,
        }),
        // A full page may have more after it; the caller continues from its last version.
        first_page: page,
        complete,
        events_replayed: 0,
        recent: RecentCommands::from_snapshot(commands, window),
    }))
}

async fn stream_end(events: &dyn EventStore, stream: &StreamId) -> Result<u64, ActivationError> {
    events
        .stream_version(stream)
        .await
        .map_err(|source| ActivationError::Store {
            stream: stream.clone(),
            source,
        })
}

fn apply_recorded<A: Aggregate>(
    state: &mut A::State,
    recent: &mut RecentCommands,
    window: DedupWindow,
    event: &RecordedEvent,
) -> Result<(), ActivationError> {
    if let Some(command_id) = event.command_id {
        recent.record(command_id, event.version, event.recorded_at, window);
    }
    A::apply(state, &read_event::<A>(event)?);
    Ok(())
}

/// A stored event as the current event type, lifted through the upcasters if it is older.
pub(crate) fn read_event<A: Aggregate>(event: &RecordedEvent) -> Result<A::Event, ActivationError> {
    upcast::read::<A>(event).map_err(|source| ActivationError::CorruptEvent {
        stream: event.stream.clone(),
        version: event.version,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        source,
    })
}
