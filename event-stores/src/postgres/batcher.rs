//! Natural batching of store calls: concurrent calls wait in one queue, and a runner sends
//! what has gathered as one statement on a connection of its own. Group commit
//! ([`group_commit`](super::group_commit)) batches appends with it, and activation reads
//! ([`start`](super::start)) batch the same way.
//!
//! Nobody waits on purpose: the first call of a quiet store is sent at once by its own caller,
//! so a lone caller waits for nothing and pays no hand-over between tasks. Batches form while the runners are busy; under
//! load (the last batch had company) a runner also lingers up to a bound for the callers it
//! just answered to come back, so that batches stay as large as the concurrency. A batch holds
//! at most one call per stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::oneshot;

use crate::error::{StoreError, StoreResult};
use crate::stream::StreamId;

use super::connection::{Conn, Held, discard};
use super::error::map_sqlx;

/// A call that can share a statement with others of its kind.
pub(super) trait Job: Send + 'static {
    /// Its stream: a batch holds at most one job per stream.
    fn stream(&self) -> &StreamId;
    /// What it counts against a batch's weight limit (events, for an append).
    fn weight(&self) -> usize;
    /// About how many bytes it adds to a statement, against the batcher's byte bound
    /// ([`Batcher::with_max_bytes`]); none unless a kind of job says so.
    fn bytes(&self) -> usize {
        0
    }
}

/// Sends a batch of jobs as one statement.
#[async_trait]
pub(super) trait Statement: Send + Sync + 'static {
    /// The jobs it sends.
    type Job: Job;
    /// What each job gets back.
    type Output: Send + 'static;
    /// Sends `jobs` (at least one, at most one per stream) on the connection in `held`, and
    /// returns each job's outcome, in order. Whatever it leaves in `held` is reused, kept or
    /// parked without a ping: a connection that broke or whose session ended must be taken out
    /// ([`discard_if_ended`](super::connection::discard_if_ended)).
    async fn send(&self, held: &mut Held, jobs: &[Self::Job]) -> Vec<StoreResult<Self::Output>>;

    /// Refuses a job that could not be sent, before it is queued, so that it fails alone
    /// instead of failing the batch it would join. Accepts every job unless a statement says
    /// otherwise.
    fn check(&self, _job: &Self::Job) -> StoreResult<()> {
        Ok(())
    }
}

/// How large batches grow and how many run at once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub max_jobs: usize,
    pub max_weight: usize,
    pub max_in_flight: usize,
    pub linger: Duration,
}

/// Batches sent so far.
#[derive(Default)]
pub(super) struct Counters {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    pub largest_batch: AtomicU64,
}

impl Counters {
    /// A copy of the counts.
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            calls: self.jobs.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
        }
    }
}

/// How a kind of store call was batched so far: for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Statements sent.
    pub batches: u64,
    /// Calls they carried.
    pub calls: u64,
    /// Calls of the largest batch.
    pub largest_batch: u64,
}

/// A job waiting for its batch, and where its answer goes.
struct Waiting<S: Statement> {
    job: S::Job,
    reply: oneshot::Sender<StoreResult<S::Output>>,
}

/// Where a call goes: sent by its caller, or queued for a runner (`start`: this call starts
/// one).
enum Route<S: Statement> {
    Alone(S::Job),
    Queued {
        answer: oneshot::Receiver<StoreResult<S::Output>>,
        start: bool,
    },
}

struct Queue<S: Statement> {
    waiting: VecDeque<Waiting<S>>,
    running: usize,
}

/// The queue of one kind of call and its runners.
pub(super) struct Batcher<S: Statement> {
    statement: S,
    pool: PgPool,
    limits: Limits,
    /// Most [`Job::bytes`] in one batch; a job above it alone goes as a batch of one.
    max_bytes: usize,
    queue: Mutex<Queue<S>>,
    counters: Counters,
    /// Connections of runners that ended, for the next runners.
    parked: Mutex<Vec<PgConnection>>,
}

impl<S: Statement> Batcher<S> {
    /// A batcher sending `statement`s on connections taken from `pool`.
    pub fn new(statement: S, pool: PgPool, limits: Limits) -> Self {
        Self {
            statement,
            pool,
            limits: Limits {
                max_jobs: limits.max_jobs.max(1),
                max_weight: limits.max_weight.max(1),
                max_in_flight: limits.max_in_flight.max(1),
                ..limits
            },
            max_bytes: usize::MAX,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                running: 0,
            }),
            counters: Counters::default(),
            parked: Mutex::new(Vec::new()),
        }
    }

    /// This batcher, with batches bounded to `max_bytes` of [`Job::bytes`] (at least 1) as
    /// well: a job that alone is larger goes as a batch of one. Unbounded by default.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// The statement batches are sent with.
    pub fn statement(&self) -> &S {
        &self.statement
    }

    /// Batches sent so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn queue(&self) -> MutexGuard<'_, Queue<S>> {
        // Nothing panics while the lock is held; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn parked(&self) -> MutexGuard<'_, Vec<PgConnection>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `job` at once when nothing waits and a runner may start (the caller sends it
    /// itself); otherwise queues it and waits for its batch's answer, starting a runner when
    /// fewer than `max_in_flight` are running. A job the statement refuses
    /// ([`Statement::check`]) fails here, alone.
    pub async fn call(self: &Arc<Self>, job: S::Job) -> StoreResult<S::Output> {
        self.statement.check(&job)?;
        let route: Route<S> = {
            let mut queue = self.queue();
            let free = queue.running < self.limits.max_in_flight;
            if free {
                queue.running += 1;
            }
            if free && queue.waiting.is_empty() {
                Route::Alone(job)
            } else {
                let (reply, answer) = oneshot::channel();
                queue.waiting.push_back(Waiting { job, reply });
                Route::Queued {
                    answer,
                    start: free,
                }
            }
        };
        let (answer, start) = match route {
            Route::Alone(job) => return self.send_alone(job).await,
            Route::Queued { answer, start } => (answer, start),
        };
        if start {
            // Spawned, not run by this caller: a caller that gives up must not abandon the
            // other calls of the batch it would have led.
            tokio::spawn(Self::run(Running::claimed(self)));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Indeterminate {
                message: "the batch runner stopped before answering".into(),
                source: None,
            })
        })
    }

    /// A batch of one, sent by its own caller as a runner of its own: no task to start and no
    /// hand-over of the answer, the latency of a quiet store. Calls that queue meanwhile are
    /// handed to a runner when it ends ([`Alone`]'s drop), even if its caller gives up.
    async fn send_alone(self: &Arc<Self>, job: S::Job) -> StoreResult<S::Output> {
        let mut alone = Alone {
            batcher: self,
            held: None,
            settled: false,
        };
        // A pool that cannot give a connection in time fails the call now (nothing was sent),
        // rather than after a second wait in the statement.
        alone.held = Some(self.own_connection().await?);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.jobs.fetch_add(1, Ordering::Relaxed);
        self.counters.largest_batch.fetch_max(1, Ordering::Relaxed);
        let results = self
            .statement
            .send(&mut alone.held, std::slice::from_ref(&job))
            .await;
        alone.settled = true;
        results.into_iter().next().unwrap_or_else(|| {
            Err(StoreError::Backend {
                message: "a batch of one was answered with no outcome".into(),
                source: None,
            })
        })
    }

    /// A runner: sends batches until the queue is empty.
    async fn run(mut running: Running<S>) {
        let batcher = Arc::clone(&running.batcher);
        let mut last_batch = 0;
        // A connection of the runner's own, kept out of the pool: sqlx pings every connection
        // it gets back, a round trip per batch that the server and this machine would pay for.
        let mut held: Held = None;
        loop {
            batcher.gather(last_batch).await;
            let Some(batch) = running.next_batch() else {
                break;
            };
            last_batch = batch.len();
            let size = batch.len() as u64;
            batcher.counters.batches.fetch_add(1, Ordering::Relaxed);
            batcher.counters.jobs.fetch_add(size, Ordering::Relaxed);
            batcher
                .counters
                .largest_batch
                .fetch_max(size, Ordering::Relaxed);
            let (jobs, replies): (Vec<S::Job>, Vec<_>) =
                batch.into_iter().map(|w| (w.job, w.reply)).unzip();
            if held.is_none() {
                match batcher.own_connection().await {
                    Ok(conn) => held = Some(conn),
                    Err(error) => {
                        // Nothing was sent: every call of the batch fails alike, and the next
                        // batch tries again.
                        let failed = SharedError::new(error).spread(replies.len());
                        for (reply, result) in replies.into_iter().zip(failed) {
                            let _ = reply.send(result);
                        }
                        continue;
                    }
                }
            }
            let results = batcher.statement.send(&mut held, &jobs).await;
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have stopped waiting; the outcome is then only in the store.
                let _ = reply.send(result);
            }
        }
        if let Some(Conn::Own(conn)) = held {
            batcher.parked().push(conn);
        }
    }

    /// A parked connection, or one taken out of the pool for good (the pool opens a
    /// replacement); the pool's error (retryable: nothing was sent) when it has none to give
    /// within its acquire timeout.
    async fn own_connection(&self) -> StoreResult<Conn> {
        if let Some(conn) = self.parked().pop() {
            return Ok(Conn::Own(conn));
        }
        self.pool
            .acquire()
            .await
            .map(|conn| Conn::Own(conn.detach()))
            .map_err(|e| map_sqlx("acquiring a connection", e))
    }

    /// Under load (the last batch had company), lets the callers it just answered come back
    /// before the next batch leaves: yields until as many wait as were in the last batch or
    /// `linger` has passed. After a lone call nothing waits, so a quiet store adds no latency.
    async fn gather(&self, last_batch: usize) {
        if last_batch < 2 || self.limits.linger.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.limits.linger;
        // tokio's timers tick in milliseconds; a linger of microseconds is a bounded yield loop.
        while self.queue().waiting.len() < last_batch && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
    }

    /// The next batch, in arrival order, at most one job per stream and within the limits of
    /// jobs, weight and bytes (the first job goes however large); `None` (and this runner
    /// counted out, under the same lock) when nothing waits. Sums saturate: a weight or size
    /// near `usize::MAX` (a read's page size may be) must not panic under the lock.
    fn take_batch(&self) -> Option<Vec<Waiting<S>>> {
        let mut queue = self.queue();
        if queue.waiting.is_empty() {
            queue.running -= 1;
            return None;
        }
        let mut batch: Vec<Waiting<S>> = Vec::new();
        let (mut weight, mut bytes) = (0usize, 0usize);
        let mut skipped = VecDeque::new();
        while let Some(next) = queue.waiting.pop_front() {
            let (w, b) = (next.job.weight(), next.job.bytes());
            if !batch.is_empty()
                && (batch.len() == self.limits.max_jobs
                    || weight.saturating_add(w) > self.limits.max_weight
                    || bytes.saturating_add(b) > self.max_bytes)
            {
                queue.waiting.push_front(next);
                break;
            }
            // A second call on a stream in this batch would race the first (on its head, for
            // an append): it waits for the next batch.
            if batch.iter().any(|b| b.job.stream() == next.job.stream()) {
                skipped.push_back(next);
                continue;
            }
            weight = weight.saturating_add(w);
            bytes = bytes.saturating_add(b);
            batch.push(next);
        }
        skipped.append(&mut queue.waiting);
        queue.waiting = skipped;
        Some(batch)
    }
}

/// A runner's place in `running`, taken before its task is spawned: it is given back when the
/// runner finds nothing to do (under the queue's lock), or when it ends any other way (a panic
/// in a batch, or its task dropped before it ever ran, as a runtime shutting down does).
struct Running<S: Statement> {
    batcher: Arc<Batcher<S>>,
    stopped: bool,
}

impl<S: Statement> Running<S> {
    /// A place already counted in `running` by the caller.
    fn claimed(batcher: &Arc<Batcher<S>>) -> Self {
        Self {
            batcher: Arc::clone(batcher),
            stopped: false,
        }
    }

    fn next_batch(&mut self) -> Option<Vec<Waiting<S>>> {
        let batch = self.batcher.take_batch();
        self.stopped = batch.is_none();
        batch
    }
}

impl<S: Statement> Drop for Running<S> {
    fn drop(&mut self) {
        if !self.stopped {
            self.batcher.queue().running -= 1;
        }
    }
}

/// A caller sending its own job ([`Batcher::send_alone`]). When it ends, even by its caller
/// giving up mid-statement, its connection is parked (or closed if the statement's fate on it is
/// unknown) and the calls that queued meanwhile get a runner.
struct Alone<'a, S: Statement> {
    batcher: &'a Arc<Batcher<S>>,
    held: Held,
    /// The statement finished: the connection still in `held` is fit for the next one (the
    /// statement took out one whose session ended).
    settled: bool,
}

impl<S: Statement> Drop for Alone<'_, S> {
    fn drop(&mut self) {
        match (self.settled, self.held.take()) {
            (true, Some(Conn::Own(conn))) => self.batcher.parked().push(conn),
            // Interrupted mid-statement: the connection's state is unknown, it serves nobody.
            (false, mut held @ Some(_)) => discard(&mut held),
            // A settled pooled connection goes back to the pool.
            _ => {}
        }
        let mut queue = self.batcher.queue();
        if queue.waiting.is_empty() {
            queue.running -= 1;
            return;
        }
        // This caller's place as a runner passes to a new runner for those who queued.
        drop(queue);
        let running = Running::claimed(self.batcher);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(Batcher::run(running));
            }
            Err(_) => {
                // Outside a runtime nothing can run them now (dropping `running` gives the
                // place back); the next call starts a runner.
                drop(running);
                tracing::warn!("a store call ended outside a Tokio runtime with calls queued");
            }
        }
    }
}

/// One failure reported to every call of a batch: the first gets the original error (with its
/// source), the others a copy of its kind and message.
pub(super) struct SharedError {
    first: StoreError,
    kind: fn(String) -> StoreError,
}

impl SharedError {
    /// The failure of a whole batch.
    pub fn new(error: StoreError) -> Self {
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
        Self { first: error, kind }
    }

    /// The outcomes of the `count` calls of the batch, all failed.
    pub fn spread<T>(self, count: usize) -> Vec<StoreResult<T>> {
        let message = format!("in a batch of {count}: {}", self.first);
        let mut outcomes = Vec::with_capacity(count);
        outcomes.push(Err(self.first));
        outcomes.extend((1..count).map(|_| Err((self.kind)(message.clone()))));
        outcomes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sqlx::postgres::PgPoolOptions;

    use super::*;

    /// A job of a given weight and size on a stream of its own.
    struct Sized {
        stream: StreamId,
        weight: usize,
        bytes: usize,
    }

    impl Job for Sized {
        fn stream(&self) -> &StreamId {
            &self.stream
        }

        fn weight(&self) -> usize {
            self.weight
        }

        fn bytes(&self) -> usize {
            self.bytes
        }
    }

    /// A statement never sent: these tests only form batches.
    struct Unsent;

    #[async_trait]
    impl Statement for Unsent {
        type Job = Sized;
        type Output = ();

        async fn send(&self, _: &mut Held, _: &[Sized]) -> Vec<StoreResult<()>> {
            Vec::new()
        }
    }

    /// A batcher (on a pool that never connects) with `jobs` of (weight, bytes) queued and one
    /// runner counted, as a runner taking batches is.
    fn queued(limits: Limits, max_bytes: usize, jobs: &[(usize, usize)]) -> Batcher<Unsent> {
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://127.0.0.1:1/unused")
            .unwrap();
        let batcher = Batcher::new(Unsent, pool, limits).with_max_bytes(max_bytes);
        {
            let mut queue = batcher.queue();
            queue.running = 1;
            for (i, &(weight, bytes)) in jobs.iter().enumerate() {
                let stream = StreamId::new("sized", i.to_string()).unwrap();
                queue.waiting.push_back(Waiting {
                    job: Sized {
                        stream,
                        weight,
                        bytes,
                    },
                    reply: oneshot::channel().0,
                });
            }
        }
        batcher
    }

    /// The (weight, bytes) of each batch taken until the queue is empty.
    fn batches(batcher: &Batcher<Unsent>) -> Vec<Vec<(usize, usize)>> {
        let mut batches = Vec::new();
        while let Some(batch) = batcher.take_batch() {
            batches.push(batch.iter().map(|w| (w.job.weight, w.job.bytes)).collect());
        }
        assert_eq!(batcher.queue().running, 0, "the runner counted itself out");
        batches
    }

    fn limits(max_weight: usize) -> Limits {
        Limits {
            max_jobs: 128,
            max_weight,
            max_in_flight: 1,
            linger: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn weights_near_usize_max_saturate_instead_of_overflowing_under_the_lock() {
        let max = usize::MAX;
        // Bounded weight (activation reads): a page size of usize::MAX after a small one.
        let bounded = queued(limits(1 << 16), max, &[(1, 0), (max, 0), (max, 0), (2, 0)]);
        assert_eq!(
            batches(&bounded),
            vec![vec![(1, 0)], vec![(max, 0)], vec![(max, 0)], vec![(2, 0)]]
        );
        // Unbounded weight (retention): the sum saturates and the batch keeps growing.
        let unbounded = queued(limits(max), max, &[(max, 0), (max, 0), (3, 0)]);
        assert_eq!(batches(&unbounded), vec![vec![(max, 0), (max, 0), (3, 0)]]);
        // Sizes saturate the same way.
        let sized = queued(limits(max), max, &[(1, max), (1, max), (1, 1)]);
        assert_eq!(batches(&sized), vec![vec![(1, max), (1, max), (1, 1)]]);
    }

    #[tokio::test]
    async fn batches_are_split_by_bytes_and_a_job_larger_than_the_bound_goes_alone() {
        let jobs = [
            (1, 40),
            (1, 40),
            (1, 30),
            (1, 150),
            (1, 10),
            (1, 100),
            (1, 1),
        ];
        let batcher = queued(limits(1_000), 100, &jobs);
        assert_eq!(
            batches(&batcher),
            vec![
                vec![(1, 40), (1, 40)],
                vec![(1, 30)],
                vec![(1, 150)],
                vec![(1, 10)],
                vec![(1, 100)],
                vec![(1, 1)],
            ]
        );
        let unbounded = queued(limits(1_000), usize::MAX, &jobs);
        assert_eq!(batches(&unbounded), vec![jobs.to_vec()]);
    }
}
