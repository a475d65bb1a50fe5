//! Stored snapshot schedules: which aggregates get snapshotted when, kept in the database so
//! that every node sees the same schedules and each occurrence runs once.
//!
//! The store keeps the cron expression as text and the next due time the caller computed; it
//! does not parse cron. A runner lists [`due`](ScheduleStore::due_schedules) schedules, and
//! [`claim`](ScheduleStore::claim_schedule)s an occurrence by moving `next_run_at` on only if it
//! still holds the time it saw: of several nodes, exactly one wins each occurrence.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::StoreResult;

/// Longest schedule name accepted, in bytes.
pub const MAX_SCHEDULE_NAME_LEN: usize = 200;

/// One stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    /// Unique name; putting a schedule of the same name replaces it.
    pub name: String,
    /// The aggregate type it snapshots.
    pub aggregate_type: String,
    /// One aggregate, or every aggregate of the type when `None`.
    pub aggregate_id: Option<String>,
    /// The cron expression, as given.
    pub cron: String,
    /// When it is due next.
    pub next_run_at: DateTime<Utc>,
    /// When an occurrence last started, if ever.
    pub last_run_at: Option<DateTime<Utc>>,
    /// What the last run reported (e.g. "snapshotted 12, skipped 3"), if any.
    pub last_outcome: Option<String>,
    /// Occurrences run so far.
    pub runs: u64,
    /// Of those, the ones that started on time (within the runner's tolerance).
    pub runs_on_time: u64,
}

impl StoredSchedule {
    /// Checks what a store refuses: an empty or oversized name, an empty type or cron.
    pub fn validate(&self) -> Result<(), crate::InvalidInput> {
        let field = |what: &'static str, value: &str| {
            if value.trim().is_empty()
                || value.len() > MAX_SCHEDULE_NAME_LEN
                || value.contains('\0')
            {
                Err(crate::InvalidInput::Schedule {
                    what,
                    value: value.chars().take(64).collect(),
                })
            } else {
                Ok(())
            }
        };
        field("name", &self.name)?;
        field("aggregate type", &self.aggregate_type)?;
        field("cron expression", &self.cron)?;
        if let Some(id) = &self.aggregate_id {
            field("aggregate id", id)?;
        }
        Ok(())
    }
}

/// Where snapshot schedules live: [`InMemoryScheduleStore`](crate::memory::InMemoryScheduleStore)
/// and, with PostgreSQL, [`PgScheduleStore`](crate::postgres::PgScheduleStore). Both pass the
/// cases in `event_stores::contract::schedules` (feature `test-support`).
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Stores `schedule`, replacing one of the same name (its counters included).
    async fn put_schedule(&self, schedule: StoredSchedule) -> StoreResult<()>;

    /// Every schedule, by name.
    async fn schedules(&self) -> StoreResult<Vec<StoredSchedule>>;

    /// Removes the schedule `name`; false when there was none.
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool>;

    /// Schedules due at or before `due_by`, earliest first, at most `limit`.
    async fn due_schedules(
        &self,
        due_by: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<StoredSchedule>>;

    /// Claims the occurrence of `name` due at `due`: moves `next_run_at` to `next`, sets
    /// `last_run_at` to `started`, counts the run (and `on_time`). True only for the caller
    /// that found `next_run_at` still at `due`; false when another claimed it first or the
    /// schedule was replaced or removed.
    async fn claim_schedule(
        &self,
        name: &str,
        due: DateTime<Utc>,
        next: DateTime<Utc>,
        started: DateTime<Utc>,
        on_time: bool,
    ) -> StoreResult<bool>;

    /// Records what the run of `name` started at `started` reported (ignored when the
    /// schedule has run again or is gone since).
    async fn record_schedule_outcome(
        &self,
        name: &str,
        started: DateTime<Utc>,
        outcome: &str,
    ) -> StoreResult<()>;
}
