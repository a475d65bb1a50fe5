//! The scheduler's second duty: running due snapshot schedules (see [`crate::schedule`]).
//!
//! Each poll loads the schedules due within the lookahead; each one not already waiting is
//! spawned, waits for its due time, claims its occurrence in the store (one node wins it) and
//! runs a batch that snapshots the aggregates with new events. The claim moves the schedule to
//! its next occurrence, or, when its cron expression names none, parks it as never due
//! ([`PARKED`]).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use event_stores::{ScheduleStore, StoredSchedule};
use tokio::sync::Semaphore;

use super::{SchedulerSettings, Shared};
use crate::batch::BatchOptions;
use crate::executor::Executor;
use crate::schedule::Cron;

/// How long until a schedule whose stored cron expression no longer parses is looked at again.
const BROKEN_RETRY: chrono::Duration = chrono::Duration::hours(1);

/// The next run of a schedule whose cron expression names no later time (its last year has
/// passed): the latest time there is, so it is never due again, yet stays listed with its
/// counts and last outcome until it is removed or put again. Both schedule stores keep it.
const PARKED: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;

/// Spawns a run for each due schedule not already waiting or running; how many it spawned.
pub(super) async fn poll(
    executor: &Executor,
    settings: &SchedulerSettings,
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
) -> usize {
    let Some(store) = &settings.schedules else {
        return 0;
    };
    let lookahead = chrono::Duration::from_std(settings.lookahead).unwrap_or_default();
    let due = match store
        .due_schedules(Utc::now() + lookahead, settings.batch.max(1))
        .await
    {
        Ok(due) => due,
        Err(error) => {
            shared.stats.lock().poll_errors += 1;
            tracing::warn!(%error, "could not load due snapshot schedules");
            return 0;
        }
    };
    let mut spawned = 0;
    for schedule in due {
        let key = (schedule.name.clone(), schedule.next_run_at);
        if !shared.schedules_in_flight.lock().insert(key.clone()) {
            continue;
        }
        spawned += 1;
        let run = Run {
            executor: executor.clone(),
            store: Arc::clone(store),
            shared: Arc::clone(shared),
            permits: Arc::clone(permits),
            on_time_within: settings.on_time_within,
            parallelism: settings.schedule_parallelism,
        };
        tokio::spawn(async move {
            run.when_due(schedule).await;
            run.shared.schedules_in_flight.lock().remove(&key);
        });
    }
    spawned
}

/// What a schedule's run needs.
struct Run {
    executor: Executor,
    store: Arc<dyn ScheduleStore>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    on_time_within: std::time::Duration,
    parallelism: usize,
}

impl Run {
    async fn when_due(&self, schedule: StoredSchedule) {
        let due = schedule.next_run_at;
        if let Ok(wait) = (due - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let started = Utc::now();
        let lag = (started - due).to_std().unwrap_or_default();
        let on_time = lag <= self.on_time_within;
        let cron = match Cron::parse(&schedule.cron) {
            Ok(cron) => cron,
            Err(error) => {
                // Stored by something other than `Schedules::put`; keep it, but quietly.
                tracing::warn!(schedule = %schedule.name, %error, "snapshot schedule skipped");
                self.claim(&schedule, due, started + BROKEN_RETRY, started, false)
                    .await;
                self.record(&schedule.name, started, &error.to_string())
                    .await;
                return;
            }
        };
        // A run missed while no node was up runs once; the next is the first after now. With
        // none (`Schedules::put` refuses such an expression as `NeverRuns`, but the last
        // occurrence of a stored one may just have come), this run is its last: it is parked.
        let next = cron.next_after(started.max(due)).unwrap_or(PARKED);
        if !self.claim(&schedule, due, next, started, on_time).await {
            return;
        }
        let clock = Instant::now();
        let options = BatchOptions {
            parallelism: self.parallelism,
            ..BatchOptions::default()
        };
        let ids = schedule.aggregate_id.clone().map(|id| vec![id]);
        let outcome = self
            .executor
            .snapshot_type_by_name(&schedule.aggregate_type, ids, &options)
            .await;
        let summary = match &outcome {
            Ok(report) => format!(
                "snapshotted {}, already current {}, failed {} in {} ms",
                report.snapshotted,
                report.skipped_current,
                report.failed,
                clock.elapsed().as_millis()
            ),
            Err(error) => format!("failed: {error}"),
        };
        {
            let mut stats = self.shared.stats.lock();
            stats.schedule_runs += 1;
            stats.schedule_runs_on_time += u64::from(on_time);
            if outcome.as_ref().map_or(true, |report| report.failed > 0) {
                stats.schedule_runs_failed += 1;
            }
        }
        let on_time_label = if on_time { "true" } else { "false" };
        metrics::counter!("snapshot_schedule_runs_total", "on_time" => on_time_label).increment(1);
        metrics::histogram!("snapshot_schedule_lag_seconds").record(lag.as_secs_f64());
        tracing::info!(schedule = %schedule.name, ?lag, %summary, "snapshot schedule ran");
        self.record(&schedule.name, started, &summary).await;
    }

    /// Claims the occurrence due at `due`; false when another node got it (or it changed).
    async fn claim(
        &self,
        schedule: &StoredSchedule,
        due: DateTime<Utc>,
        next: DateTime<Utc>,
        started: DateTime<Utc>,
        on_time: bool,
    ) -> bool {
        match self
            .store
            .claim_schedule(&schedule.name, due, next, started, on_time)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(schedule = %schedule.name, %error, "could not claim a snapshot schedule's run");
                false
            }
        }
    }

    async fn record(&self, name: &str, started: DateTime<Utc>, outcome: &str) {
        if let Err(error) = self
            .store
            .record_schedule_outcome(name, started, outcome)
            .await
        {
            tracing::warn!(schedule = %name, %error, "could not record a snapshot schedule's outcome");
        }
    }
}
