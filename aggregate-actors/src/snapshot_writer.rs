//! The background snapshot writer: takes encoded states from actors and persists them off the
//! command path.
//!
//! Writes for one aggregate are strictly ordered and never go backwards: while a write for a
//! stream is in flight, newer requests for that stream wait, and each newer request supersedes
//! any older one still waiting (only the newest state matters); a request at or below the
//! version in flight joins that write and is told its outcome. Different streams are written
//! concurrently up to a limit. A write that panics is a failed write: its waiters are told, and
//! the stream's next write starts as usual. After a save succeeds, the snapshot is read back
//! and verified (checksum, codec, decoding with the current state schema); only then does
//! retention delete older ones (never the one just written, and never counting snapshots
//! ahead of it, see [`retention`]), so an aggregate never loses its newest *valid* snapshot.
//! With incremental snapshots on, a snapshot may be written as a delta against the newest full
//! one (see [`incremental`]); it is verified against that base the same way, and retention in
//! the stores keeps every base that a kept delta names.
//! A failed write is logged and counted; it never fails a command.
//! The per-day statistics the writes count (created, deleted, archived, bytes, creation time)
//! are added to the snapshot store at most [`SAVE_DAYS_EVERY`] after a write, before a flush
//! is answered and when the writer stops; a failed addition is kept for the next one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use event_stores::{SnapshotArchive, SnapshotRecord, SnapshotStore, StreamId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tracing::Instrument;
use uuid::Uuid;

use crate::codec::CompressionConfig;
use crate::metrics::AggregateMetrics;
use crate::settings::Retention;

mod incremental;
mod retention;

use incremental::Sealed;

/// Requests the writer holds before it starts refusing (and counting) new ones.
const QUEUE_CAPACITY: usize = 16_384;
/// Encoded states at least this large are compressed on the blocking pool, not a runtime worker.
const BLOCKING_SEAL_BYTES: usize = 256 * 1024;
/// How long per-day statistics may wait after a write before they are added to the store: one
/// statement per type at most this often, however many snapshots are written.
const SAVE_DAYS_EVERY: Duration = Duration::from_secs(1);

/// The outcome of one snapshot write, for callers that wait for it (snapshot on demand).
pub(crate) type WriteOutcome = Result<u64, String>;

/// An encoded state to persist.
pub(crate) struct SnapshotJob {
    pub(crate) stream: StreamId,
    pub(crate) version: u64,
    pub(crate) last_event_id: Uuid,
    pub(crate) state_schema_version: u32,
    /// The codec name recorded with the bytes.
    pub(crate) codec: &'static str,
    /// Checks a stored record as activation would (monomorphised for the aggregate type).
    pub(crate) verify: fn(&SnapshotRecord) -> Result<(), String>,
    pub(crate) encoded: Vec<u8>,
    pub(crate) compression: CompressionConfig,
    pub(crate) retention: Retention,
    /// Where retention moves old snapshots; deleted when `None`.
    pub(crate) archive: Option<Arc<dyn SnapshotArchive>>,
    pub(crate) metrics: Arc<AggregateMetrics>,
    /// Told the version written (possibly a newer one that superseded this), or the error.
    pub(crate) waiters: Vec<oneshot::Sender<WriteOutcome>>,
}

enum Request {
    Write(SnapshotJob),
    Flush(oneshot::Sender<()>),
}

/// A write under way: its version, and who waits for its outcome (the waiters of the requests
/// it answers for, including those that arrived while it was running).
struct InFlight {
    version: u64,
    waiters: Vec<oneshot::Sender<WriteOutcome>>,
    metrics: Arc<AggregateMetrics>,
}

impl InFlight {
    /// Tells every waiter how the write of `stream` ended: its outcome, or, when the task
    /// panicked (or was cancelled), a failure, counted and logged like any failed write.
    fn finish(self, stream: &StreamId, joined: Result<WriteOutcome, JoinError>) {
        let outcome = joined.unwrap_or_else(|error| {
            self.metrics.snapshot_failed();
            tracing::warn!(%stream, version = self.version, %error, "snapshot write panicked; commands are unaffected");
            Err(format!("snapshot write panicked: {error}"))
        });
        for waiter in self.waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SnapshotWriter {
    requests: mpsc::Sender<Request>,
}

impl SnapshotWriter {
    /// Starts the writer task on the current runtime.
    pub(crate) fn start(store: Arc<dyn SnapshotStore>, max_concurrent_writes: usize) -> Self {
        let (requests, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(store, receiver, max_concurrent_writes.max(1)));
        Self { requests }
    }

    /// Queues a snapshot without waiting. A full queue drops the request (counted): a snapshot
    /// is an optimisation and must never hold up a command.
    pub(crate) fn submit(&self, job: SnapshotJob) {
        if let Err(error) = self.requests.try_send(Request::Write(job)) {
            let job = match error {
                mpsc::error::TrySendError::Full(Request::Write(job))
                | mpsc::error::TrySendError::Closed(Request::Write(job)) => job,
                _ => return,
            };
            tracing::warn!(stream = %job.stream, version = job.version, "snapshot writer queue full or closed; snapshot dropped");
            job.metrics.snapshot_superseded();
            for waiter in job.waiters {
                let _ = waiter.send(Err("snapshot writer queue full or closed".into()));
            }
        }
    }

    /// Waits until every snapshot queued before this call is written (or has failed).
    pub(crate) async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.requests.send(Request::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(timeout, wait).await;
        }
    }
}

async fn run(
    store: Arc<dyn SnapshotStore>,
    mut requests: mpsc::Receiver<Request>,
    max_concurrent_writes: usize,
) {
    let mut in_flight: HashMap<StreamId, InFlight> = HashMap::new();
    let mut waiting: HashMap<StreamId, SnapshotJob> = HashMap::new();
    let mut ready: Vec<StreamId> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut writes: JoinSet<WriteOutcome> = JoinSet::new();
    // The stream each write task writes, to know whose write failed when a task panics.
    let mut tasks: HashMap<tokio::task::Id, StreamId> = HashMap::new();
    let mut open = true;
    // The counters of every type written so far, and when their days are next saved.
    let mut counters: HashMap<&'static str, Arc<AggregateMetrics>> = HashMap::new();
    let mut save_days_at: Option<tokio::time::Instant> = None;

    loop {
        tokio::select! {
            request = requests.recv(), if open => match request {
                Some(Request::Write(job)) => {
                    counters
                        .entry(job.metrics.aggregate_type())
                        .or_insert_with(|| Arc::clone(&job.metrics));
                    let stream = job.stream.clone();
                    match in_flight.get_mut(&stream) {
                        Some(writing) if job.version <= writing.version => join(job, writing),
                        _ => {
                            if let Some(older) = waiting.remove(&stream) {
                                merge_into(older, &mut waiting, job);
                            } else {
                                waiting.insert(stream.clone(), job);
                                if !in_flight.contains_key(&stream) {
                                    ready.push(stream);
                                }
                            }
                        }
                    }
                }
                Some(Request::Flush(done)) => flushes.push(done),
                None => open = false,
            },
            () = tokio::time::sleep_until(save_days_at.unwrap_or_else(tokio::time::Instant::now)),
                if save_days_at.is_some() =>
            {
                save_days_at = None;
                save_days(&*store, &counters).await;
            }
            Some(finished) = writes.join_next_with_id(), if !writes.is_empty() => {
                save_days_at.get_or_insert_with(|| tokio::time::Instant::now() + SAVE_DAYS_EVERY);
                let (task, joined) = match finished {
                    Ok((task, outcome)) => (task, Ok(outcome)),
                    Err(error) => (error.id(), Err(error)),
                };
                // Every task is in `tasks` until it ends, whether it returned or panicked.
                if let Some(stream) = tasks.remove(&task) {
                    if let Some(writing) = in_flight.remove(&stream) {
                        writing.finish(&stream, joined);
                    }
                    if waiting.contains_key(&stream) {
                        ready.push(stream);
                    }
                }
            }
            else => break,
        }
        while writes.len() < max_concurrent_writes {
            let Some(stream) = ready.pop() else { break };
            if let Some(mut job) = waiting.remove(&stream) {
                let writing = InFlight {
                    version: job.version,
                    waiters: std::mem::take(&mut job.waiters),
                    metrics: Arc::clone(&job.metrics),
                };
                in_flight.insert(stream.clone(), writing);
                let task = writes.spawn(write(Arc::clone(&store), job));
                tasks.insert(task.id(), stream);
            }
        }
        if writes.is_empty() && waiting.is_empty() && (!flushes.is_empty() || !open) {
            save_days_at = None;
            save_days(&*store, &counters).await;
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            if !open {
                break;
            }
        }
    }
}

/// Adds every type's unsaved per-day figures to the store; what fails is put back.
async fn save_days(
    store: &dyn SnapshotStore,
    counters: &HashMap<&'static str, Arc<AggregateMetrics>>,
) {
    for (aggregate_type, metrics) in counters {
        let days = metrics.take_unsaved_days();
        if days.is_empty() {
            continue;
        }
        if let Err(error) = store.add_snapshot_days(aggregate_type, &days).await {
            tracing::warn!(aggregate_type, %error, "adding per-day snapshot statistics failed; kept for the next try");
            metrics.put_back_unsaved_days(days);
        }
    }
}

/// Keeps the newer of two waiting requests for one stream; the older one's waiters move over.
fn merge_into(
    older: SnapshotJob,
    waiting: &mut HashMap<StreamId, SnapshotJob>,
    newer: SnapshotJob,
) {
    let (mut keep, drop) = if newer.version >= older.version {
        (newer, older)
    } else {
        (older, newer)
    };
    drop.metrics.snapshot_superseded();
    keep.waiters.extend(drop.waiters);
    waiting.insert(keep.stream.clone(), keep);
}

/// A request at or below the version in flight adds nothing: its waiters are told the outcome
/// of the write in flight, once it is known.
fn join(job: SnapshotJob, writing: &mut InFlight) {
    job.metrics.snapshot_superseded();
    writing.waiters.extend(job.waiters);
}

/// Writes `job` (whose waiters the writer loop holds) and returns the outcome.
async fn write(store: Arc<dyn SnapshotStore>, job: SnapshotJob) -> WriteOutcome {
    let span = tracing::debug_span!("snapshot", stream = %job.stream, version = job.version);
    write_job(store, job).instrument(span).await
}

async fn write_job(store: Arc<dyn SnapshotStore>, job: SnapshotJob) -> WriteOutcome {
    let SnapshotJob {
        stream,
        version,
        last_event_id,
        state_schema_version,
        codec: codec_name,
        verify,
        encoded,
        compression,
        retention,
        archive,
        metrics,
        waiters: _,
    } = job;
    let started = std::time::Instant::now();
    let outcome = async {
        // Incremental snapshots: small states are always full (as they are uncompressed).
        let base = if encoded.len() >= compression.threshold_bytes {
            incremental::choose_base(&*store, &stream, version, compression.max_deltas).await
        } else {
            None
        };
        let Sealed {
            snapshot: sealed,
            base,
        } = if encoded.len() >= BLOCKING_SEAL_BYTES {
            tokio::task::spawn_blocking(move || incremental::seal(encoded, &compression, base))
                .await
                .map_err(|e| format!("compression task failed: {e}"))?
        } else {
            incremental::seal(encoded, &compression, base)
        }
        .map_err(|e| e.to_string())?;
        let stored_size = sealed.bytes.len() as u64;
        let record = SnapshotRecord {
            stream: stream.clone(),
            version,
            last_event_id,
            state_schema_version,
            codec: codec_name.to_owned(),
            compression: sealed.compression.to_owned(),
            checksum: sealed.checksum,
            uncompressed_size: sealed.uncompressed_size,
            stored_size,
            taken_at: chrono::Utc::now(),
            bytes: sealed.bytes,
            base: base.as_ref().map(|base| base.reference),
        };
        // What the store kept, checked: retention may only delete older snapshots once the
        // newest is known to be usable.
        let stored = store
            .save_and_read_back(record)
            .await
            .map_err(|e| e.to_string())?;
        metrics.snapshot_taken(stored_size, sealed.uncompressed_size, started.elapsed());
        match &base {
            Some(base) => {
                metrics.snapshot_was_delta();
                incremental::verify_delta(&stored, base, verify)
            }
            None => verify(&stored),
        }
        .map_err(|e| format!("snapshot read back fails verification: {e}"))?;
        retention::apply(
            &*store,
            archive.as_ref(),
            &stream,
            version,
            retention,
            &metrics,
        )
        .await;
        Ok(version)
    }
    .await;
    if let Err(error) = &outcome {
        metrics.snapshot_failed();
        tracing::warn!(%stream, version, %error, "snapshot write failed; commands are unaffected");
    }
    outcome
}
