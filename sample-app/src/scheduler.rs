//! The reminder scheduler the service and the demo run next to their executor: it fires due
//! reminders (the accounts' reviews) through the executor, exactly once each.
//!
//! [`ReminderScheduler`] wraps the framework's
//! [`Scheduler`] so that it can be shared: the HTTP
//! handlers read its figures (`GET /stats`) while `serve` owns its shutdown. Stop it before
//! the executor shuts down, so that no firing meets a closing executor (such a firing would
//! only fail and be retried by the next run, under the same command id).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aggregate_actors::Executor;
use aggregate_actors::scheduler::{Scheduler, SchedulerHandle, SchedulerSettings, SchedulerStats};

/// A running (or stopped) reminder scheduler; clones share it.
#[derive(Clone)]
pub struct ReminderScheduler {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    /// `None` once stopped.
    handle: Option<SchedulerHandle>,
    /// The figures at the time it was stopped.
    last: SchedulerStats,
}

impl std::fmt::Debug for ReminderScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReminderScheduler")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ReminderScheduler {
    /// The settings `serve` runs with: the framework's defaults (a poll every 250 ms, due
    /// reminders loaded a second ahead and fired on time).
    pub fn service_settings() -> SchedulerSettings {
        SchedulerSettings::default()
    }

    /// Settings for short delays (the demo): a poll every 20 ms and quick retries.
    pub fn eager_settings() -> SchedulerSettings {
        SchedulerSettings {
            poll_interval: Duration::from_millis(20),
            retry_after: Duration::from_millis(100),
            ..SchedulerSettings::default()
        }
    }

    /// Starts a scheduler for `executor` on the current Tokio runtime.
    pub fn start(executor: &Executor, settings: SchedulerSettings) -> Self {
        let handle = Scheduler::start(executor.clone(), settings);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                handle: Some(handle),
                last: SchedulerStats::default(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What it did so far: firings (fired, refused, stale, failed), the ones in flight, and the
    /// lag of firings after their due time. After [`stop`](Self::stop), the last figures.
    pub fn stats(&self) -> SchedulerStats {
        let inner = self.lock();
        match &inner.handle {
            Some(handle) => handle.stats(),
            None => inner.last.clone(),
        }
    }

    /// Looks for due reminders now instead of at the next poll.
    pub fn wake(&self) {
        if let Some(handle) = &self.lock().handle {
            handle.wake();
        }
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        self.lock().handle.is_some()
    }

    /// Stops polling and waits for the loop to end (firings already running finish on their
    /// own); returns the last figures. Stopping twice does nothing more.
    pub async fn stop(&self) -> SchedulerStats {
        let handle = {
            let mut inner = self.lock();
            let Some(handle) = inner.handle.take() else {
                return inner.last.clone();
            };
            inner.last = handle.stats();
            handle
        };
        handle.stop().await;
        self.lock().last.clone()
    }
}
