//! The reminder [`Scheduler`]: one per node, it loads due reminders from the event store and
//! fires each through its aggregate's actor (see [`crate::reminder`] for the guarantees).
//!
//! ```no_run
//! # async fn demo(executor: aggregate_actors::Executor) {
//! use aggregate_actors::scheduler::{Scheduler, SchedulerSettings};
//!
//! let scheduler = Scheduler::start(executor.clone(), SchedulerSettings::default());
//! // … later
//! println!("{:?}", scheduler.stats());
//! scheduler.stop().await;
//! # }
//! ```
//!
//! It polls every [`poll_interval`](SchedulerSettings::poll_interval) for reminders due within
//! the [`lookahead`](SchedulerSettings::lookahead), waits for each one's due time and fires it,
//! at most [`max_in_flight`](SchedulerSettings::max_in_flight) at once. A firing that fails
//! (store unreachable, actor overloaded) leaves the reminder due, and it is tried again after
//! [`retry_after`](SchedulerSettings::retry_after), under the same command id; so is a reminder
//! of an aggregate type this node's executor does not serve (left for a node that does). While
//! they wait, the polls leave them out of the store's due query
//! ([`DueReminders::skip`](event_stores::DueReminders::skip)), so however many of them are due
//! first, each poll still loads up to [`batch`](SchedulerSettings::batch) others. In a cluster,
//! give it the shards this node owns ([`SchedulerSettings::shards`]), so each reminder is fired
//! by the owner of its aggregate's shard.
//!
//! Given a [`ScheduleStore`] ([`SchedulerSettings::schedules`]), the same loop runs the stored
//! snapshot schedules when they come due (see [`crate::schedule`]).

mod schedules;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use event_stores::{DueReminders, ScheduleStore, StoredReminder};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::executor::Executor;
use crate::reminder::FireOutcome;

/// Which shards' reminders a node fires: `None` for all.
pub type ShardFilter = Arc<dyn Fn() -> Option<Vec<u32>> + Send + Sync>;

/// How a [`Scheduler`] polls and fires.
#[derive(Clone)]
pub struct SchedulerSettings {
    /// How often it looks for due reminders (default 250 ms). It also looks again at once when
    /// woken ([`SchedulerHandle::wake`]) and whenever a firing completes while more may wait.
    pub poll_interval: Duration,
    /// How far ahead it loads reminders, to fire them on time (default 1 s).
    pub lookahead: Duration,
    /// Most reminders loaded per poll (default 1 000).
    pub batch: usize,
    /// Most firings running at once (default 256).
    pub max_in_flight: usize,
    /// How long a failed firing waits before it is tried again (default 1 s).
    pub retry_after: Duration,
    /// The shards whose reminders this node fires (default: all).
    pub shards: Option<ShardFilter>,
    /// Where the snapshot schedules to run are stored (default: none, no schedules run).
    pub schedules: Option<Arc<dyn ScheduleStore>>,
    /// A schedule's run counts as on time when it starts at most this long after its due time
    /// (default 1 s).
    pub on_time_within: Duration,
    /// Aggregates one schedule's run snapshots at once (default 8).
    pub schedule_parallelism: usize,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            lookahead: Duration::from_secs(1),
            batch: 1_000,
            max_in_flight: 256,
            retry_after: Duration::from_secs(1),
            shards: None,
            schedules: None,
            on_time_within: Duration::from_secs(1),
            schedule_parallelism: 8,
        }
    }
}

impl std::fmt::Debug for SchedulerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerSettings")
            .field("poll_interval", &self.poll_interval)
            .field("lookahead", &self.lookahead)
            .field("batch", &self.batch)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry_after", &self.retry_after)
            .field("shards", &self.shards.as_ref().map(|_| "filtered"))
            .field("schedules", &self.schedules.is_some())
            .field("on_time_within", &self.on_time_within)
            .field("schedule_parallelism", &self.schedule_parallelism)
            .finish()
    }
}

/// What a scheduler did so far.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Polls of the store.
    pub polls: u64,
    /// Polls that failed (the store was unreachable).
    pub poll_errors: u64,
    /// Reminders whose command was stored by a firing (duplicates included).
    pub fired: u64,
    /// Of those, firings an earlier attempt had already stored.
    pub duplicates: u64,
    /// Firings whose command the aggregate refused (recorded on the reminder).
    pub rejected: u64,
    /// Firings skipped because the reminder had been replaced, cancelled or moved on.
    pub stale: u64,
    /// Firings that failed and will be retried.
    pub failed: u64,
    /// Reminders of a type this executor does not serve.
    pub unserved: u64,
    /// Firings waiting for their due time or running now.
    pub in_flight: u64,
    /// How late firings started after their due time: median, 99th percentile and maximum
    /// over the last 65 536 firings (a retry that found its firing already stored, a
    /// duplicate, is not one).
    pub lag_p50: Duration,
    /// See [`lag_p50`](Self::lag_p50).
    pub lag_p99: Duration,
    /// See [`lag_p50`](Self::lag_p50).
    pub lag_max: Duration,
    /// Snapshot schedule occurrences this node ran.
    pub schedule_runs: u64,
    /// Of those, the ones that started within
    /// [`on_time_within`](SchedulerSettings::on_time_within) of their due time.
    pub schedule_runs_on_time: u64,
    /// Of those, the runs in which some snapshot failed, or the whole run did.
    pub schedule_runs_failed: u64,
}

/// Most lag samples kept for the quantiles.
const LAG_SAMPLES: usize = 65_536;

/// How long a finished firing is remembered, so a poll that began before it finished does not
/// fire it again (it would only find it stale).
const DONE_MEMORY: Duration = Duration::from_secs(10);

struct Shared {
    stats: Mutex<SchedulerStats>,
    lags: Mutex<VecDeque<Duration>>,
    /// Firings spawned and not finished: (reminder, due time).
    in_flight: Mutex<HashSet<(Uuid, DateTime<Utc>)>>,
    /// Firings finished lately: a poll that began before one finished may still list it.
    done: Mutex<HashMap<(Uuid, DateTime<Utc>), Instant>>,
    /// Reminders whose last firing failed (or found no executor serving them), and when they
    /// may be tried again; the polls leave them out until then.
    retry_at: Mutex<HashMap<Uuid, Instant>>,
    /// Schedule occurrences waiting for their due time or running: (name, due time).
    schedules_in_flight: Mutex<HashSet<(String, DateTime<Utc>)>>,
    wake: Notify,
    stop: Notify,
}

impl Shared {
    /// The reminders waiting to be retried, which a poll leaves out so that they do not take
    /// the places of the reminders due after them; forgets those whose wait is over.
    fn set_aside(&self) -> Vec<Uuid> {
        let now = Instant::now();
        let mut retry_at = self.retry_at.lock();
        retry_at.retain(|_, at| *at > now);
        retry_at.keys().copied().collect()
    }
}

/// Fires due reminders; see the [module docs](self).
pub struct Scheduler;

impl Scheduler {
    /// Starts a scheduler for `executor` on the current Tokio runtime.
    pub fn start(executor: Executor, settings: SchedulerSettings) -> SchedulerHandle {
        let shared = Arc::new(Shared {
            stats: Mutex::new(SchedulerStats::default()),
            lags: Mutex::new(VecDeque::new()),
            in_flight: Mutex::new(HashSet::new()),
            done: Mutex::new(HashMap::new()),
            retry_at: Mutex::new(HashMap::new()),
            schedules_in_flight: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            stop: Notify::new(),
        });
        let task = tokio::spawn(run(executor, settings, Arc::clone(&shared)));
        SchedulerHandle { shared, task }
    }
}

/// A running scheduler.
pub struct SchedulerHandle {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl SchedulerHandle {
    /// What it did so far.
    pub fn stats(&self) -> SchedulerStats {
        let mut stats = self.shared.stats.lock().clone();
        stats.in_flight = self.shared.in_flight.lock().len() as u64;
        let mut lags: Vec<Duration> = self.shared.lags.lock().iter().copied().collect();
        lags.sort_unstable();
        let at = |q: f64| -> Duration {
            let index = ((lags.len() as f64 - 1.0) * q).round().max(0.0) as usize;
            lags.get(index).copied().unwrap_or_default()
        };
        stats.lag_p50 = at(0.50);
        stats.lag_p99 = at(0.99);
        stats.lag_max = lags.last().copied().unwrap_or_default();
        stats
    }

    /// Looks for due reminders now (e.g. after scheduling one due sooner than the next poll).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops polling and waits for the loop to end; firings already running finish on their
    /// own.
    pub async fn stop(self) {
        self.shared.stop.notify_one();
        let _ = self.task.await;
    }
}

async fn run(executor: Executor, settings: SchedulerSettings, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let lookahead = chrono::Duration::from_std(settings.lookahead).unwrap_or_default();
    loop {
        let query = DueReminders {
            shards: settings.shards.as_ref().and_then(|shards| shards()),
            due_by: Utc::now() + lookahead,
            limit: settings.batch.max(1),
            skip: shared.set_aside(),
        };
        let due = executor.event_store().due_reminders(&query).await;
        let spawned = match due {
            Ok(due) => {
                shared.stats.lock().polls += 1;
                metrics::gauge!("reminders_due").set(due.len() as f64);
                spawn_firings(&executor, &settings, &shared, &permits, due)
            }
            Err(error) => {
                shared.stats.lock().poll_errors += 1;
                tracing::warn!(%error, "could not load due reminders");
                0
            }
        };
        // Schedules waiting for their time are in flight: a poll right away spawns nothing.
        schedules::poll(&executor, &settings, &shared, &permits).await;
        if spawned > 0 {
            continue;
        }
        tokio::select! {
            () = shared.stop.notified() => return,
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
}

/// Spawns a firing for each due reminder not already in flight or waiting to be retried.
fn spawn_firings(
    executor: &Executor,
    settings: &SchedulerSettings,
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    due: Vec<StoredReminder>,
) -> usize {
    let now = Instant::now();
    // A finished firing's reminder has moved on in the store; forget it once no poll that
    // began before could list it any more.
    shared
        .done
        .lock()
        .retain(|_, finished| now.duration_since(*finished) < DONE_MEMORY);
    let mut spawned = 0;
    for reminder in due {
        let key = (reminder.reminder_id, reminder.due_at);
        if shared.done.lock().contains_key(&key) {
            continue;
        }
        if shared
            .retry_at
            .lock()
            .get(&reminder.reminder_id)
            .is_some_and(|at| *at > now)
        {
            continue;
        }
        if !shared.in_flight.lock().insert(key) {
            continue;
        }
        spawned += 1;
        let (executor, shared, permits) =
            (executor.clone(), Arc::clone(shared), Arc::clone(permits));
        let retry_after = settings.retry_after;
        tokio::spawn(async move {
            let finished = fire_when_due(&executor, &shared, &permits, reminder, retry_after).await;
            if finished {
                shared.done.lock().insert(key, Instant::now());
            }
            shared.in_flight.lock().remove(&key);
            // Reminders beyond this poll's batch may be waiting.
            shared.wake.notify_one();
        });
    }
    spawned
}

/// Fires `reminder` at its due time; true when it is done with (fired, refused or stale), false
/// when it stays due.
async fn fire_when_due(
    executor: &Executor,
    shared: &Shared,
    permits: &Semaphore,
    reminder: StoredReminder,
    retry_after: Duration,
) -> bool {
    if let Ok(wait) = (reminder.due_at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let Ok(_permit) = permits.acquire().await else {
        return false;
    };
    let lag = (Utc::now() - reminder.due_at).to_std().unwrap_or_default();
    let aggregate = reminder.stream.aggregate_type().to_owned();
    let reminder_id = reminder.reminder_id;
    let outcome = executor.fire_reminder(reminder).await;
    let counter = |name: &'static str| {
        metrics::counter!(name, "aggregate" => aggregate.clone()).increment(1);
    };
    let mut stats = shared.stats.lock();
    match &outcome {
        FireOutcome::Fired { duplicate, .. } => {
            stats.fired += 1;
            stats.duplicates += u64::from(*duplicate);
            counter("reminders_fired_total");
        }
        FireOutcome::Rejected(error) => {
            stats.rejected += 1;
            counter("reminders_rejected_total");
            tracing::info!(aggregate, %reminder_id, error, "reminder's command rejected; recorded");
        }
        FireOutcome::Stale => stats.stale += 1,
        FireOutcome::Failed(error) => {
            stats.failed += 1;
            counter("reminders_failed_total");
            tracing::warn!(aggregate, %reminder_id, %error, "reminder firing failed; will retry");
            shared
                .retry_at
                .lock()
                .insert(reminder_id, Instant::now() + retry_after);
        }
        FireOutcome::Unserved => {
            // Left for a node that serves the type; look again only after a while.
            stats.unserved += 1;
            shared
                .retry_at
                .lock()
                .insert(reminder_id, Instant::now() + retry_after);
        }
    }
    drop(stats);
    let finished = matches!(
        outcome,
        FireOutcome::Fired { .. } | FireOutcome::Rejected(_) | FireOutcome::Stale
    );
    if matches!(
        outcome,
        FireOutcome::Fired { .. } | FireOutcome::Rejected(_)
    ) {
        shared.retry_at.lock().remove(&reminder_id);
    }
    // A duplicate's lag would be its retry's, not when the firing that stored it started.
    if matches!(
        outcome,
        FireOutcome::Fired {
            duplicate: false,
            ..
        } | FireOutcome::Rejected(_)
    ) {
        metrics::histogram!("reminder_lag_seconds", "aggregate" => aggregate.clone())
            .record(lag.as_secs_f64());
        let mut lags = shared.lags.lock();
        if lags.len() == LAG_SAMPLES {
            lags.pop_front();
        }
        lags.push_back(lag);
    }
    finished
}
