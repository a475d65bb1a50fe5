//! Group commit: concurrent appends to different streams share one statement and one commit.
//!
//! Each aggregate's actor appends one command at a time, but many actors append at once. Sent
//! one by one, each append pays a round trip, a statement and a commit (a WAL flush on a durable
//! server). Here appends wait in one queue, and a batch runner (one by default, like a
//! database's WAL writer) takes what has gathered, at most one append per stream and bounded in
//! appends and events, and sends it as one statement: every append keeps its own
//! expected-version check and its own fence, so a stale one is refused with its own
//! [`StoreError::VersionConflict`] (or [`StoreError::Fenced`]) while its batch-mates commit, and
//! every caller is answered after the shared commit (EventStoreDB acknowledges writes after a
//! shared flush the same way).
//!
//! Batching is natural: the first append of a quiet store starts a runner at once and goes
//! alone, so a lone caller waits for nothing. Batches form while the runner is busy; under load
//! (the last batch had company) the runner also lingers up to [`GroupCommit::linger`] for the
//! callers it just answered to come back, so that batches stay as large as the concurrency.
//!
//! A batch refused as a whole by a unique violation (an event id already stored, a race with
//! another process on a version) or a deadlock is re-run one append at a time, so each gets its
//! precise answer. A batch whose connection broke after sending answers every append
//! [`StoreError::Indeterminate`]: the commit may have happened, for all of them or none.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::Row;
use sqlx::postgres::PgConnection;
use tokio::sync::oneshot;

use crate::error::{StoreError, StoreResult};
use crate::event_store::AppendReceipt;

use super::append::{Append, Appender, Columns, Conn, Held, discard, fence_params};
use super::error::{UNIQUE_VIOLATION, is_lost_in_flight, map_sqlx, sqlstate};
use super::event_store::PG_MAX_EVENTS_PER_APPEND;

/// SQLSTATEs after which a batch is re-run one append at a time: unique violation, deadlock,
/// serialization failure. Each means the transaction rolled back, so nothing was stored.
const RERUN_ONE_BY_ONE: [&str; 3] = [UNIQUE_VIOLATION, "40P01", "40001"];

/// Many appends in one statement. `req` holds one row per append (`k` numbers them), `e` one row
/// per event naming its append (`k`) and its index in it (`i`). Ownership rows of every shard
/// named are share-locked in shard order (the single append's fence, for all at once), and each
/// append inserts only when its own head and fence hold. The result has one row per append.
const APPEND_MANY: &str = r#"
WITH req AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int4[], $5::uuid[], $6::int8[])
        WITH ORDINALITY AS r(aggregate_type, aggregate_id, expected, shard, owner, epoch, k)
), fence AS (
    SELECT shard, owner, epoch FROM shard_owners
    WHERE shard = ANY($4::int4[])
    ORDER BY shard
    FOR SHARE
), head AS (
    SELECT r.k, r.aggregate_type, r.aggregate_id, r.expected,
           COALESCE(l.version, 0) AS version,
           GREATEST(now(), l.recorded_at) AS recorded_at,
           (r.shard IS NULL OR EXISTS (SELECT 1 FROM fence f
                                       WHERE f.shard = r.shard AND f.owner = r.owner
                                         AND f.epoch = r.epoch)) AS fence_ok
    FROM req r
    LEFT JOIN LATERAL (
        SELECT version, recorded_at FROM events
        WHERE aggregate_type = r.aggregate_type AND aggregate_id = r.aggregate_id
        ORDER BY version DESC
        LIMIT 1
    ) l ON TRUE
), xact AS (
    SELECT pg_current_xact_id()::text::bigint AS id
), ins AS (
    INSERT INTO events (aggregate_type, aggregate_id, version, event_id, event_type,
                        schema_version, payload, correlation_id, causation_id, recorded_at,
                        position, command_id)
    SELECT h.aggregate_type, h.aggregate_id, h.version + e.i, e.event_id, e.event_type,
           e.schema_version, e.payload, e.correlation_id, e.causation_id, h.recorded_at,
           (xact.id << 16) + e.n - 1, e.command_id
    FROM xact,
         UNNEST($7::int4[], $8::int4[], $9::uuid[], $10::text[], $11::int4[], $12::bytea[],
                $13::uuid[], $14::uuid[], $15::uuid[])
             WITH ORDINALITY AS e(k, i, event_id, event_type, schema_version, payload,
                                  correlation_id, causation_id, command_id, n)
         JOIN head h ON h.k = e.k
    WHERE h.version = h.expected AND h.fence_ok
    ORDER BY e.n
    RETURNING aggregate_type, aggregate_id, version, position, recorded_at
)
SELECT h.k, h.version, COUNT(ins.version), MAX(ins.version), MAX(ins.position),
       MAX(ins.recorded_at), h.fence_ok
FROM head h
LEFT JOIN ins ON ins.aggregate_type = h.aggregate_type AND ins.aggregate_id = h.aggregate_id
GROUP BY h.k, h.version, h.fence_ok
ORDER BY h.k
"#;

/// How concurrent appends of one [`PgEventStore`](super::PgEventStore) share statements.
///
/// ```
/// use event_stores::{GroupCommit, PgConfig};
///
/// // On by default; turn it off to send every append as its own statement.
/// let config = PgConfig::new("postgres://app@localhost/app").group_commit(false);
/// assert!(!config.group_commit.enabled);
/// assert_eq!(GroupCommit::default().max_appends, 128);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Whether appends are batched at all (default true).
    pub enabled: bool,
    /// Most appends in one batch (default 128).
    pub max_appends: usize,
    /// Most events in one batch (default 8 192; capped at
    /// [`PG_MAX_EVENTS_PER_APPEND`], since positions number the events of one transaction).
    /// A single append larger than this goes alone.
    pub max_events: usize,
    /// Most batches in flight at once, each on a connection of its own, kept outside the pool
    /// (so the store may hold this many connections beyond the pool's maximum), since sqlx
    /// pings every connection that returns to its pool (default 1: one committer,
    /// like a database's WAL writer). While they are all busy, new appends gather into the next
    /// batch. On two cores one in flight measured best at 16 and 64 appenders (fewer, larger
    /// statements leave the server more CPU); more can help a server whose commits are slow
    /// (remote storage), at the price of smaller batches.
    pub max_batches_in_flight: usize,
    /// Under load only, how long a runner may hold the next batch for the appenders of its last
    /// batch to come back (default 200 µs): a batch of N waits until N appends are queued again
    /// or this has passed. After a batch of one it never waits, so a lone caller's latency is
    /// unchanged. Zero sends whatever is queued at once.
    pub linger: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            enabled: true,
            max_appends: 128,
            max_events: 8_192,
            max_batches_in_flight: 1,
            linger: Duration::from_micros(200),
        }
    }
}

/// What group commit did so far, for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Statements sent (a batch of one is sent as a single append).
    pub batches: u64,
    /// Appends sent in them.
    pub appends: u64,
    /// Appends of the largest batch.
    pub largest_batch: u64,
    /// Batches refused as a whole and re-run one append at a time.
    pub reruns: u64,
}

/// An append waiting for its batch, and where its answer goes.
struct Waiting {
    append: Append,
    reply: oneshot::Sender<StoreResult<AppendReceipt>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    running: usize,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    appends: AtomicU64,
    largest_batch: AtomicU64,
    reruns: AtomicU64,
}

/// The queue of one store's appends and its batch runners.
pub(super) struct Batcher {
    appender: Appender,
    settings: GroupCommit,
    queue: Mutex<Queue>,
    counters: Counters,
    /// Connections of runners that ended, for the next runners.
    parked: Mutex<Vec<PgConnection>>,
}

impl Batcher {
    /// A batcher sending on `appender`'s pool.
    pub fn new(appender: Appender, settings: GroupCommit) -> Self {
        Self {
            appender,
            settings: GroupCommit {
                max_appends: settings.max_appends.max(1),
                max_events: settings.max_events.clamp(1, PG_MAX_EVENTS_PER_APPEND),
                max_batches_in_flight: settings.max_batches_in_flight.max(1),
                ..settings
            },
            queue: Mutex::new(Queue::default()),
            counters: Counters::default(),
            parked: Mutex::new(Vec::new()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> GroupCommit {
        self.settings
    }

    /// What the batcher did so far.
    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            appends: self.counters.appends.load(Ordering::Relaxed),
            largest_batch: self.counters.largest_batch.load(Ordering::Relaxed),
            reruns: self.counters.reruns.load(Ordering::Relaxed),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while the lock is held; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `append` and waits for its batch's answer. Starts a runner when fewer than
    /// `max_batches_in_flight` are running, so a lone append is sent at once.
    pub async fn append(self: &Arc<Self>, append: Append) -> StoreResult<AppendReceipt> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue();
            queue.waiting.push_back(Waiting { append, reply });
            let start = queue.running < self.settings.max_batches_in_flight;
            if start {
                queue.running += 1;
            }
            start
        };
        if start {
            // Spawned, not run by this caller: a caller that gives up must not abandon the
            // other appends of the batch it would have led.
            tokio::spawn(Arc::clone(self).run());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Indeterminate {
                message: "append: the batch runner stopped before answering".into(),
                source: None,
            })
        })
    }

    /// A runner: sends batches until the queue is empty.
    async fn run(self: Arc<Self>) {
        let mut running = Running {
            batcher: &self,
            stopped: false,
        };
        let mut last_batch = 0;
        // The batcher's own connection, kept out of the pool: sqlx pings every connection it
        // gets back, a round trip per batch that the server and this machine would pay for.
        let mut held: Held = self.own_connection().await;
        loop {
            self.gather(last_batch).await;
            let Some(batch) = running.next_batch() else {
                break;
            };
            last_batch = batch.len();
            let (appends, replies): (Vec<Append>, Vec<_>) =
                batch.into_iter().map(|w| (w.append, w.reply)).unzip();
            let results = self.send(&mut held, &appends).await;
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have stopped waiting; the outcome is then only in the store.
                let _ = reply.send(result);
            }
        }
        if let Some(Conn::Own(conn)) = held {
            self.parked().push(conn);
        }
    }

    fn parked(&self) -> MutexGuard<'_, Vec<PgConnection>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A parked connection of this batcher's, or one taken out of the pool for good (the pool
    /// opens a replacement), or none when the pool has none to give: the first statement then
    /// borrows one and reports why it could not.
    async fn own_connection(&self) -> Held {
        if let Some(conn) = self.parked().pop() {
            return Some(Conn::Own(conn));
        }
        match self.appender.pool.acquire().await {
            Ok(conn) => Some(Conn::Own(conn.detach())),
            Err(_) => None,
        }
    }

    /// Under load (the last batch had company), lets the appenders it just answered come back
    /// before the next batch leaves: yields until as many wait as were in the last batch or
    /// `linger` has passed. After a lone append nothing waits, so a quiet store adds no latency.
    async fn gather(&self, last_batch: usize) {
        if last_batch < 2 || self.settings.linger.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.settings.linger;
        // tokio's timers tick in milliseconds; a linger of microseconds is a bounded yield loop.
        while self.queue().waiting.len() < last_batch && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
    }

    /// The next batch, in arrival order, at most one append per stream; `None` (and this runner
    /// counted out, under the same lock) when nothing waits.
    fn take_batch(&self) -> Option<Vec<Waiting>> {
        let mut queue = self.queue();
        if queue.waiting.is_empty() {
            queue.running -= 1;
            return None;
        }
        let mut batch: Vec<Waiting> = Vec::new();
        let mut events = 0;
        let mut skipped = VecDeque::new();
        while let Some(next) = queue.waiting.pop_front() {
            let count = next.append.events.len();
            if !batch.is_empty()
                && (batch.len() == self.settings.max_appends
                    || events + count > self.settings.max_events)
            {
                queue.waiting.push_front(next);
                break;
            }
            // A second append to a stream in this batch would race the first on its head:
            // it waits for the next batch.
            if batch.iter().any(|b| b.append.stream == next.append.stream) {
                skipped.push_back(next);
                continue;
            }
            events += count;
            batch.push(next);
        }
        skipped.append(&mut queue.waiting);
        queue.waiting = skipped;
        Some(batch)
    }

    /// Sends one batch and returns each append's outcome, in order.
    async fn send(&self, held: &mut Held, appends: &[Append]) -> Vec<StoreResult<AppendReceipt>> {
        let size = appends.len() as u64;
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.appends.fetch_add(size, Ordering::Relaxed);
        self.counters
            .largest_batch
            .fetch_max(size, Ordering::Relaxed);
        if let [one] = appends {
            return vec![self.appender.one(held, one).await];
        }
        match self.appender.many(held, appends).await {
            Ok(outcomes) => outcomes,
            Err(Batch::Rerun) => {
                self.counters.reruns.fetch_add(1, Ordering::Relaxed);
                let mut outcomes = Vec::with_capacity(appends.len());
                for append in appends {
                    outcomes.push(self.appender.one(held, append).await);
                }
                outcomes
            }
            Err(Batch::Failed(mut error)) => appends
                .iter()
                .enumerate()
                .map(|(i, _)| Err(if i == 0 { error.take() } else { error.copy() }))
                .collect(),
        }
    }
}

/// Counts a runner out if it ends without having done so (a panic in a batch).
struct Running<'a> {
    batcher: &'a Batcher,
    stopped: bool,
}

impl Running<'_> {
    fn next_batch(&mut self) -> Option<Vec<Waiting>> {
        let batch = self.batcher.take_batch();
        self.stopped = batch.is_none();
        batch
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.stopped {
            self.batcher.queue().running -= 1;
        }
    }
}

/// Why a batch statement gave no per-append outcomes.
enum Batch {
    /// Refused as a whole, nothing stored: re-run one append at a time.
    Rerun,
    /// Failed for every append alike.
    Failed(SharedError),
}

/// One failure reported to every append of a batch: the first gets the original error (with
/// its source), the others a copy of its kind and message.
struct SharedError {
    first: Option<StoreError>,
    kind: fn(String) -> StoreError,
    message: String,
}

impl SharedError {
    fn new(error: StoreError) -> Self {
        let kind: fn(String) -> StoreError = match &error {
            StoreError::Unavailable { .. } => |message| StoreError::Unavailable {
                message,
                source: None,
            },
            StoreError::Indeterminate { .. } => |message| StoreError::Indeterminate {
                message,
                source: None,
            },
            _ => |message| StoreError::Backend {
                message,
                source: None,
            },
        };
        Self {
            message: error.to_string(),
            first: Some(error),
            kind,
        }
    }

    fn take(&mut self) -> StoreError {
        self.first.take().unwrap_or_else(|| self.copy())
    }

    fn copy(&self) -> StoreError {
        (self.kind)(format!("batch of appends: {}", self.message))
    }
}

impl Appender {
    /// Sends `appends` (at least two, at most one per stream) as one statement.
    async fn many(
        &self,
        held: &mut Held,
        appends: &[Append],
    ) -> Result<Vec<StoreResult<AppendReceipt>>, Batch> {
        let count = appends.len();
        let events: usize = appends.iter().map(|a| a.events.len()).sum();
        let mut types = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        let mut expected = Vec::with_capacity(count);
        let mut shards = Vec::with_capacity(count);
        let mut owners = Vec::with_capacity(count);
        let mut epochs = Vec::with_capacity(count);
        let mut of_append = Vec::with_capacity(events);
        let mut index = Vec::with_capacity(events);
        let mut columns = Columns::with_capacity(events);
        for (k, append) in appends.iter().enumerate() {
            types.push(append.stream.aggregate_type());
            ids.push(append.stream.aggregate_id());
            expected.push(append.expected);
            let fence = match &append.fence {
                Some(fence) => match fence_params(fence) {
                    Ok((shard, owner, epoch)) => (Some(shard), Some(owner), Some(epoch)),
                    Err(error) => return Err(Batch::Failed(SharedError::new(error))),
                },
                None => (None, None, None),
            };
            shards.push(fence.0);
            owners.push(fence.1);
            epochs.push(fence.2);
            // Both fit: batches hold at most PG_MAX_EVENTS_PER_APPEND events.
            let k = k as i32 + 1;
            for i in 0..append.events.len() {
                of_append.push(k);
                index.push(i as i32 + 1);
            }
            columns.extend(&append.events);
        }

        let failed = |error| Err(Batch::Failed(SharedError::new(error)));
        let conn = match self.connection(held).await {
            Ok(conn) => conn,
            Err(error) => return failed(error),
        };
        let query = sqlx::query(APPEND_MANY)
            .bind(&types)
            .bind(&ids)
            .bind(&expected)
            .bind(&shards)
            .bind(&owners)
            .bind(&epochs)
            .bind(&of_append)
            .bind(&index)
            .bind(&columns.ids)
            .bind(&columns.types)
            .bind(&columns.schema_versions)
            .bind(&columns.payloads)
            .bind(&columns.correlations)
            .bind(&columns.causations)
            .bind(&columns.commands)
            .fetch_all(&mut *conn);
        let rows = match tokio::time::timeout(self.client_timeout, query).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(err)) => {
                if is_lost_in_flight(&err) {
                    discard(held);
                }
                return match sqlstate(&err) {
                    Some(code) if RERUN_ONE_BY_ONE.contains(&code.as_str()) => Err(Batch::Rerun),
                    _ if is_lost_in_flight(&err) => failed(StoreError::Indeterminate {
                        message: format!(
                            "batch of {count} appends: connection lost after sending: {err}"
                        ),
                        source: Some(Box::new(err)),
                    }),
                    _ => failed(map_sqlx("appending a batch", err)),
                };
            }
            Err(_) => {
                // See `Appender::one`: the statement may still commit, for every append.
                discard(held);
                return failed(self.no_answer(&appends[0].stream));
            }
        };
        if rows.len() != count {
            return failed(StoreError::Backend {
                message: format!("a batch of {count} appends returned {} rows", rows.len()),
                source: None,
            });
        }
        Ok(appends
            .iter()
            .zip(&rows)
            .enumerate()
            .map(|(k, (append, row))| {
                let numbered: i64 = row
                    .try_get(0)
                    .map_err(|e| map_sqlx("reading a batch result", e))?;
                if numbered != k as i64 + 1 {
                    return Err(StoreError::Backend {
                        message: format!("batch result {numbered} out of order at {}", k + 1),
                        source: None,
                    });
                }
                append.outcome(row, 1)
            })
            .collect())
    }
}
