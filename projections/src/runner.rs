//! [`Projector`]: runs projections over the event feed, catch-up first, then live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use event_stores::{EventStore, RecordedEvent};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::checkpoint::Checkpoints;
use crate::error::ProjectionError;
use crate::projection::{EventFilter, Projection};
use crate::recheck::{Rechecks, WakeUps};
use crate::settings::ProjectorSettings;
use crate::sink::{AtLeastOnce, Sink};
use crate::stats::ProjectionStats;

/// Runs projections, each on a task of its own, over one event store's feed.
///
/// A projection reads from its checkpoint in batches until the feed is exhausted (catch-up),
/// then waits for a wake-up ([`wake`](Self::wake), or PostgreSQL notifications with
/// [`listen`](Self::listen)) or the poll interval, and reads again (live). A failing batch is
/// retried with a doubling back-off and never skipped. A batch whose checkpoint moved under the
/// runner (another runner of the same projection committed first) is rolled back, and the
/// runner goes on from the checkpoint it finds after a short pause (from 2 ms, doubling up to
/// 100 ms while the checkpoint keeps moving, and reported in
/// [`ProjectionStats::last_error`] after eight in a row).
pub struct Projector {
    events: Arc<dyn EventStore>,
    settings: ProjectorSettings,
    wake_ups: Arc<WakeUps>,
}

impl Projector {
    /// A projector over `events` with default settings.
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        Self::with_settings(events, ProjectorSettings::default())
    }

    /// A projector over `events` with `settings`.
    pub fn with_settings(events: Arc<dyn EventStore>, settings: ProjectorSettings) -> Self {
        Self {
            events,
            settings,
            wake_ups: Arc::new(WakeUps::default()),
        }
    }

    /// Starts `projection` at least once, with its checkpoint in `checkpoints`.
    pub fn run<P: Projection>(
        &self,
        projection: P,
        checkpoints: Arc<dyn Checkpoints>,
    ) -> ProjectionHandle {
        self.start(Arc::new(AtLeastOnce {
            projection,
            checkpoints,
        }))
    }

    /// Tells every projection of this projector that events may have been appended, so those
    /// that are caught up read at once instead of at their next poll.
    pub fn wake(&self) {
        self.wake_ups.wake();
    }

    pub(crate) fn wake_handle(&self) -> Arc<WakeUps> {
        Arc::clone(&self.wake_ups)
    }

    pub(crate) fn start(&self, sink: Arc<dyn Sink>) -> ProjectionHandle {
        let stats = Arc::new(Mutex::new(ProjectionStats {
            name: sink.name().to_owned(),
            ..ProjectionStats::default()
        }));
        let progress = Arc::new(Notify::new());
        let (control, requests) = mpsc::channel(4);
        let task = Task {
            sink,
            events: Arc::clone(&self.events),
            settings: self.settings.clone(),
            wake_ups: Arc::clone(&self.wake_ups),
            stats: Arc::clone(&stats),
            progress: Arc::clone(&progress),
            requests,
            counted_at: Mutex::new(None),
        };
        ProjectionHandle {
            stats,
            progress,
            control,
            task: Mutex::new(Some(tokio::spawn(task.run()))),
        }
    }
}

enum Request {
    Rebuild(oneshot::Sender<Result<(), String>>),
    Stop,
}

/// A running projection: its stats, and the way to stop or rebuild it.
pub struct ProjectionHandle {
    stats: Arc<Mutex<ProjectionStats>>,
    progress: Arc<Notify>,
    control: mpsc::Sender<Request>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ProjectionHandle {
    /// A snapshot of the projection's stats.
    pub fn stats(&self) -> ProjectionStats {
        self.stats.lock().clone()
    }

    /// Waits until the projection has checkpointed `position` or beyond, at most `timeout`;
    /// `true` if it got there.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let reached = async {
            loop {
                let progressed = self.progress.notified();
                if self.stats.lock().position >= position {
                    return;
                }
                progressed.await;
            }
        };
        tokio::time::timeout(timeout, reached).await.is_ok()
    }

    /// Clears the read model ([`Projection::reset`]) and replays the feed from the first event.
    /// Returns once the reset is done (the replay goes on in the background).
    ///
    /// The checkpoint is set to 0 before the read model is cleared (in one transaction for a
    /// [`PgProjection`](crate::postgres::PgProjection)). After an error the runner goes on
    /// from the checkpoint it then finds: from the first event if the checkpoint was reset, so
    /// a reset that failed partway loses nothing.
    pub async fn rebuild(&self) -> Result<(), ProjectionError> {
        let name = self.stats.lock().name.clone();
        let stopped = || ProjectionError::Checkpoint {
            projection: name.clone(),
            message: "the projection is not running".into(),
        };
        let (done, answer) = oneshot::channel();
        self.control
            .send(Request::Rebuild(done))
            .await
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(ProjectionError::Checkpoint {
                projection: name.clone(),
                message,
            }),
            Err(_) => Err(stopped()),
        }
    }

    /// Stops the projection after the batch in progress, and waits for it.
    pub async fn stop(&self) {
        let _ = self.control.send(Request::Stop).await;
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for ProjectionHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

/// One projection's loop.
struct Task {
    sink: Arc<dyn Sink>,
    events: Arc<dyn EventStore>,
    settings: ProjectorSettings,
    wake_ups: Arc<WakeUps>,
    stats: Arc<Mutex<ProjectionStats>>,
    progress: Arc<Notify>,
    requests: mpsc::Receiver<Request>,
    /// When the events behind were last counted.
    counted_at: Mutex<Option<Instant>>,
}

/// How often, at most, a projection that is behind counts the events it has still to read.
const COUNT_PERIOD: Duration = Duration::from_secs(1);

/// The pause after a runner first finds its checkpoint moved: a lost race with another runner,
/// which is busy with the batch, so a short one. It doubles while the checkpoint keeps moving.
const FIRST_MOVED_PAUSE: Duration = Duration::from_millis(2);

/// The longest pause after a moved checkpoint.
const MOVED_PAUSE_CAP: Duration = Duration::from_millis(100);

/// After this many moved checkpoints in a row, with no batch of its own in between, a runner
/// reports it in [`ProjectionStats::last_error`].
const MOVES_REPORTED_AFTER: u32 = 8;

/// What the loop does next.
enum Next {
    Read,
    Wait,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(10);
        // Checkpoints found moved since this runner last checkpointed a batch, and the pause
        // before the next attempt.
        let mut moves_in_a_row = 0u32;
        let mut moved_pause = FIRST_MOVED_PAUSE;
        let mut position = None;
        // After a wake-up, look again soon, backing off up to the poll interval: the appended
        // event may not be readable yet (read_all waits for older transactions to end).
        let wake_ups = Arc::clone(&self.wake_ups);
        let mut rechecks = Rechecks::start(&wake_ups, self.settings.recheck_window);
        loop {
            // Armed before the wake-ups are counted: one that comes after the count below ends
            // the wait for the poll, whatever the read finds.
            let woken = wake_ups.notified();
            tokio::pin!(woken);
            // Any wake-up since the last look restarts the window, whatever the runner was
            // doing when it came: reading, handling a batch, pausing after a failure or a
            // moved checkpoint, rebuilding.
            rechecks.notice(&wake_ups);
            let stepped = position.is_some();
            let step = match position {
                None => self.sink.position().await.map(|p| {
                    position = Some(p);
                    self.record(|s| s.position = p);
                    Next::Read
                }),
                Some(from) => self.step(from).await.map(|(to, next)| {
                    position = Some(to);
                    next
                }),
            };
            let next = match step {
                Ok(next) => {
                    backoff = Duration::from_millis(10);
                    if stepped {
                        moves_in_a_row = 0;
                        moved_pause = FIRST_MOVED_PAUSE;
                    }
                    next
                }
                Err(error @ ProjectionError::CheckpointMoved { .. }) => {
                    // Another runner of this projection committed first: not a failure. Go on
                    // from the checkpoint it left, after a pause that lets it get ahead (and
                    // keeps a checkpoint that moves every time from hammering the database).
                    moves_in_a_row = moves_in_a_row.saturating_add(1);
                    let persistent = moves_in_a_row >= MOVES_REPORTED_AFTER;
                    if moves_in_a_row == MOVES_REPORTED_AFTER {
                        tracing::warn!(
                            projection = self.sink.name(),
                            moves_in_a_row,
                            "the checkpoint keeps moving under this runner"
                        );
                    } else {
                        tracing::debug!(
                            projection = self.sink.name(),
                            "checkpoint moved by another runner"
                        );
                    }
                    metrics::counter!("projection_checkpoint_moves_total", "projection" => self.sink.name().to_owned()).increment(1);
                    self.record(|s| {
                        s.checkpoint_moves += 1;
                        if persistent {
                            s.last_error =
                                Some(format!("{error} ({moves_in_a_row} times in a row)"));
                        }
                    });
                    position = None;
                    let pause = moved_pause;
                    moved_pause = (moved_pause * 2).min(MOVED_PAUSE_CAP);
                    if self.pause(pause, &mut position).await {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(projection = self.sink.name(), %error, "projection batch failed; retrying");
                    metrics::counter!("projection_retries_total", "projection" => self.sink.name().to_owned()).increment(1);
                    self.record(|s| {
                        s.retries += 1;
                        s.last_error = Some(error.to_string());
                    });
                    if self.pause(backoff, &mut position).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                    continue;
                }
            };
            match next {
                Next::Read => {
                    // Between batches: a rebuild or stop request goes first.
                    match self.requests.try_recv() {
                        Ok(request) => {
                            if self.serve(request, &mut position).await {
                                return;
                            }
                        }
                        Err(_) => continue,
                    }
                }
                Next::Wait => {
                    let pause = rechecks.pause(self.settings.poll_interval);
                    tokio::select! {
                        // Counted: the look at the top of the loop restarts the window.
                        () = woken => {}
                        () = tokio::time::sleep(pause) => {}
                        request = self.requests.recv() => match request {
                            Some(request) => {
                                if self.serve(request, &mut position).await {
                                    return;
                                }
                            }
                            None => return,
                        },
                    }
                }
            }
        }
    }

    /// Waits `pause`, serving a rebuild or stop request that comes meanwhile; `true` when the
    /// loop must end.
    async fn pause(&mut self, pause: Duration, position: &mut Option<u64>) -> bool {
        let request = tokio::select! {
            () = tokio::time::sleep(pause) => None,
            request = self.requests.recv() => Some(request),
        };
        match request {
            None => false,
            Some(None) => true,
            Some(Some(request)) => self.serve(request, position).await,
        }
    }

    /// Reads one batch after `from`, hands it over and checkpoints it.
    async fn step(&self, from: u64) -> Result<(u64, Next), ProjectionError> {
        // The field is public: 0 would read nothing and look caught up forever.
        let limit = self.settings.batch_size.max(1);
        let batch = self.events.read_all(from, limit).await?;
        let Some(last) = batch.last() else {
            self.record(|s| {
                s.caught_up = true;
                s.lag = Duration::ZERO;
                s.events_behind = 0;
                s.last_error = None;
            });
            return Ok((from, Next::Wait));
        };
        let to = last.position;
        let newest = last.recorded_at;
        let oldest = batch.first().map_or(newest, |first| first.recorded_at);
        let fetched = batch.len();
        let filter = self.sink.filter();
        let admitted: Vec<RecordedEvent> = match filter {
            EventFilter::All => batch,
            filter => batch.into_iter().filter(|e| filter.admits(e)).collect(),
        };
        let read = admitted.len();
        self.sink.apply(&admitted, from, to).await?;
        let full = fetched == limit;
        let lag = (Utc::now() - oldest).to_std().unwrap_or_default();
        let behind = if full {
            self.count_behind(to).await
        } else {
            Some(0)
        };
        let name = self.sink.name().to_owned();
        metrics::counter!("projection_events_handled_total", "projection" => name.clone())
            .increment(read as u64);
        if let Some(behind) = behind {
            metrics::gauge!("projection_lag_events", "projection" => name.clone())
                .set(behind as f64);
        }
        metrics::gauge!("projection_lag_seconds", "projection" => name).set(lag.as_secs_f64());
        self.record(|s| {
            s.position = to;
            s.events_handled += read as u64;
            s.events_read += fetched as u64;
            s.batches += 1;
            s.caught_up = !full;
            s.last_event_at = Some(newest);
            s.lag = lag;
            if let Some(behind) = behind {
                s.events_behind = behind;
            }
            s.last_error = None;
        });
        Ok((to, Next::Read))
    }

    /// The events after `position`, if a second has passed since the last count (and the store
    /// could count them).
    async fn count_behind(&self, position: u64) -> Option<u64> {
        {
            let mut counted_at = self.counted_at.lock();
            if counted_at.is_some_and(|at| at.elapsed() < COUNT_PERIOD) {
                return None;
            }
            *counted_at = Some(Instant::now());
        }
        match self.events.count_after(position).await {
            Ok(behind) => Some(behind),
            Err(error) => {
                tracing::debug!(projection = self.sink.name(), %error, "could not count the events behind");
                None
            }
        }
    }

    /// Serves a control request; `true` when the loop must end.
    async fn serve(&self, request: Request, position: &mut Option<u64>) -> bool {
        match request {
            Request::Stop => true,
            Request::Rebuild(done) => {
                let reset = self.sink.reset().await;
                if reset.is_ok() {
                    *position = Some(0);
                    self.record(|s| {
                        s.position = 0;
                        s.caught_up = false;
                    });
                } else {
                    // The checkpoint may be 0 now and the read model partly cleared: go on
                    // from the checkpoint as it is, not from where this runner was.
                    *position = None;
                }
                let _ = done.send(reset.map_err(|e| e.to_string()));
                false
            }
        }
    }

    /// Changes the stats and wakes whoever waits for progress.
    fn record(&self, change: impl FnOnce(&mut ProjectionStats)) {
        change(&mut self.stats.lock());
        self.progress.notify_waiters();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;
    use event_stores::{InMemoryEventStore, NewEvent, StreamId};

    use super::*;

    /// A sink whose checkpoint has always moved by the time it commits: counts its attempts.
    struct AlwaysMoved(Arc<AtomicU64>);

    #[async_trait]
    impl Sink for AlwaysMoved {
        fn name(&self) -> &str {
            "always-moved"
        }

        fn filter(&self) -> EventFilter {
            EventFilter::All
        }

        async fn position(&self) -> Result<u64, ProjectionError> {
            Ok(0)
        }

        async fn apply(
            &self,
            _events: &[RecordedEvent],
            _from: u64,
            _to: u64,
        ) -> Result<(), ProjectionError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            // As a database round trip would: lets the runtime stop the task.
            tokio::task::yield_now().await;
            Err(ProjectionError::CheckpointMoved {
                projection: self.name().to_owned(),
            })
        }

        async fn reset(&self) -> Result<(), ProjectionError> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_that_keeps_moving_is_retried_after_a_pause_and_shows_in_last_error() {
        let store = Arc::new(InMemoryEventStore::new());
        let stream = StreamId::new("account", "a").unwrap();
        store
            .append(&stream, 0, vec![NewEvent::new("Happened", 1, vec![0x90])])
            .await
            .unwrap();
        let attempts = Arc::new(AtomicU64::new(0));
        let projector = Projector::new(store);
        let running = projector.start(Arc::new(AlwaysMoved(Arc::clone(&attempts))));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tried = attempts.load(Ordering::SeqCst);
        let stats = running.stats();
        assert!(tried >= 2, "it kept trying: {tried}");
        assert!(
            tried < 40,
            "it paused between attempts: {tried} in a second"
        );
        assert!(
            stats.last_error.is_some(),
            "a checkpoint that keeps moving is reported: {stats:?}"
        );
        assert!(stats.checkpoint_moves >= tried - 1, "{stats:?}");
        running.stop().await;
    }
}
