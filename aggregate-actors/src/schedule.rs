//! Snapshot schedules: cron expressions, per aggregate type or per aggregate, that snapshot
//! the aggregates with new events since their last snapshot.
//!
//! Schedules are stored ([`ScheduleStore`]: in memory, or the `snapshot_schedules` table in
//! PostgreSQL), so every node sees them and their next run; the node's
//! [`Scheduler`](crate::scheduler::Scheduler) runs them when given the store
//! ([`SchedulerSettings::schedules`](crate::scheduler::SchedulerSettings::schedules)), next to
//! the reminders. Each occurrence runs once across the cluster: the runner claims it by moving
//! the stored next run on with a compare-and-set.
//!
//! A run is a [`rebuild_snapshots`](crate::Executor::rebuild_snapshots) (every aggregate of the
//! type) or a [`create_snapshots`](crate::Executor::create_snapshots) (one aggregate) that
//! skips aggregates whose newest snapshot is already current: only those with new events get
//! a snapshot. A run missed while no node was up runs once when one starts, not once per missed
//! occurrence, and is counted late. A run is *on time* when it starts within
//! [`SchedulerSettings::on_time_within`](crate::scheduler::SchedulerSettings::on_time_within)
//! of its due time; the stored counts give the on-time rate.
//!
//! A cron expression with a year field may name no later time: [`Schedules::put`] refuses one
//! that names none at all ([`ScheduleError::NeverRuns`]), and a stored schedule whose last
//! occurrence has come runs it, then is parked as never due (its next run is set to
//! `DateTime::<Utc>::MAX_UTC`): it stays listed, with its counts and last outcome, until it
//! is removed or put again.
//!
//! Cron expressions have six or seven fields, seconds first (`sec min hour day-of-month month
//! day-of-week [year]`), in UTC, as the [`cron`] crate reads them: `0 0 3 * * *` is 03:00 every
//! day, `*/10 * * * * *` every ten seconds.
//!
//! ```
//! # use aggregate_actors::{Aggregate, Context};
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Ev;
//! # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
//! # struct Account;
//! # impl Aggregate for Account {
//! #     const TYPE: &'static str = "account";
//! #     type Command = (); type Event = Ev; type State = (); type Error = No;
//! #     fn decide(_: &(), _: &(), _: &mut Context<'_, Self>) -> Result<Vec<Ev>, No> { Ok(vec![]) }
//! #     fn apply(_: &mut (), _: &Ev) {}
//! # }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use aggregate_actors::event_stores::InMemoryScheduleStore;
//! use aggregate_actors::schedule::{Schedules, SnapshotSchedule};
//!
//! let schedules = Schedules::new(Arc::new(InMemoryScheduleStore::new()));
//! let nightly = SnapshotSchedule::for_type::<Account>("accounts-nightly", "0 0 3 * * *")?;
//! let stored = schedules.put(nightly).await?;
//! println!("next run at {}", stored.next_run_at);
//! # Ok(()) }
//! ```

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use event_stores::{InvalidInput, ScheduleStore, StoreError, StoredSchedule, StreamId};

use crate::aggregate::Aggregate;

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("cron expression {expression:?} is not valid: {reason}")]
    Cron {
        /// The expression.
        expression: String,
        /// What the parser said.
        reason: String,
    },
    /// The cron expression parses but names no future time (e.g. a year in the past).
    #[error("cron expression {expression:?} never fires again")]
    NeverRuns {
        /// The expression.
        expression: String,
    },
    /// The aggregate id (or the name) is not storable.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The schedule store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct Cron {
    expression: String,
    schedule: cron::Schedule,
}

impl Cron {
    /// Parses `expression` (see the [module docs](self) for the format).
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let schedule =
            cron::Schedule::from_str(expression.trim()).map_err(|e| ScheduleError::Cron {
                expression: expression.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            expression: expression.trim().to_owned(),
            schedule,
        })
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first time strictly after `after` that it names, if any.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }
}

/// A schedule to store: a name, what it snapshots, and when.
#[derive(Debug, Clone)]
pub struct SnapshotSchedule {
    name: String,
    aggregate_type: &'static str,
    aggregate_id: Option<String>,
    cron: Cron,
}

impl SnapshotSchedule {
    /// Every aggregate of type `A` with new events, at the times `cron` names.
    pub fn for_type<A: Aggregate>(
        name: impl Into<String>,
        cron: &str,
    ) -> Result<Self, ScheduleError> {
        Ok(Self {
            name: name.into(),
            aggregate_type: A::TYPE,
            aggregate_id: None,
            cron: Cron::parse(cron)?,
        })
    }

    /// Aggregate `id` of type `A`, if it has new events, at the times `cron` names.
    pub fn for_aggregate<A: Aggregate>(
        name: impl Into<String>,
        id: impl Into<String>,
        cron: &str,
    ) -> Result<Self, ScheduleError> {
        let id = id.into();
        StreamId::check(A::TYPE, &id)?;
        Ok(Self {
            name: name.into(),
            aggregate_type: A::TYPE,
            aggregate_id: Some(id),
            cron: Cron::parse(cron)?,
        })
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it is due next after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.next_after(after)
    }
}

/// Stores, lists and removes snapshot schedules.
#[derive(Clone)]
pub struct Schedules {
    store: Arc<dyn ScheduleStore>,
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schedules")
    }
}

impl Schedules {
    /// Schedules kept in `store`.
    pub fn new(store: Arc<dyn ScheduleStore>) -> Self {
        Self { store }
    }

    /// The store, e.g. for [`SchedulerSettings::schedules`](crate::scheduler::SchedulerSettings::schedules).
    pub fn store(&self) -> &Arc<dyn ScheduleStore> {
        &self.store
    }

    /// Stores `schedule` (replacing one of the same name, and its counts), due first at the
    /// next time its cron expression names; returns it as stored.
    pub async fn put(&self, schedule: SnapshotSchedule) -> Result<StoredSchedule, ScheduleError> {
        let next_run_at =
            schedule
                .next_after(Utc::now())
                .ok_or_else(|| ScheduleError::NeverRuns {
                    expression: schedule.cron.expression.clone(),
                })?;
        let stored = StoredSchedule {
            name: schedule.name,
            aggregate_type: schedule.aggregate_type.to_owned(),
            aggregate_id: schedule.aggregate_id,
            cron: schedule.cron.expression,
            next_run_at,
            last_run_at: None,
            last_outcome: None,
            runs: 0,
            runs_on_time: 0,
        };
        // The store validates names, ids and lengths: its refusal is bad input, not a failure
        // to retry.
        self.store
            .put_schedule(stored.clone())
            .await
            .map_err(|error| match error {
                StoreError::InvalidInput(invalid) => ScheduleError::InvalidInput(invalid),
                other => ScheduleError::Store(other),
            })?;
        Ok(stored)
    }

    /// Every stored schedule with its next run, last run and counts.
    pub async fn list(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        self.store.schedules().await
    }

    /// Removes the schedule `name`; false when there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        self.store.delete_schedule(name).await
    }
}
