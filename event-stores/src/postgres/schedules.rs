//! [`PgScheduleStore`]: snapshot schedules in the `snapshot_schedules` table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::error::map_sqlx;
use crate::{ScheduleStore, StoreError, StoreResult, StoredSchedule};

const LIST: &str = "SELECT name, aggregate_type, aggregate_id, cron, next_run_at, last_run_at, \
     last_outcome, runs, runs_on_time FROM snapshot_schedules ORDER BY name";

const DUE: &str = "SELECT name, aggregate_type, aggregate_id, cron, next_run_at, last_run_at, \
     last_outcome, runs, runs_on_time FROM snapshot_schedules \
     WHERE next_run_at <= $1 ORDER BY next_run_at, name LIMIT $2";

/// Snapshot schedules in PostgreSQL, usually on the event store's pool
/// ([`PgEventStore::pool`](super::PgEventStore::pool)); the table comes with the event
/// store's migrations.
#[derive(Debug, Clone)]
pub struct PgScheduleStore {
    pool: PgPool,
}

impl PgScheduleStore {
    /// A store on `pool`, whose database has been migrated ([`migrate`](super::migrate)).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn count(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Backend {
        message: format!("negative {what} {value} in snapshot_schedules"),
        source: None,
    })
}

fn schedule(row: &PgRow) -> StoreResult<StoredSchedule> {
    let get = |e: sqlx::Error| map_sqlx("reading a snapshot schedule", e);
    Ok(StoredSchedule {
        name: row.try_get("name").map_err(get)?,
        aggregate_type: row.try_get("aggregate_type").map_err(get)?,
        aggregate_id: row.try_get("aggregate_id").map_err(get)?,
        cron: row.try_get("cron").map_err(get)?,
        next_run_at: row.try_get("next_run_at").map_err(get)?,
        last_run_at: row.try_get("last_run_at").map_err(get)?,
        last_outcome: row.try_get("last_outcome").map_err(get)?,
        runs: count(row.try_get("runs").map_err(get)?, "runs")?,
        runs_on_time: count(row.try_get("runs_on_time").map_err(get)?, "runs_on_time")?,
    })
}

#[async_trait]
impl ScheduleStore for PgScheduleStore {
    async fn put_schedule(&self, schedule: StoredSchedule) -> StoreResult<()> {
        schedule.validate()?;
        let runs = i64::try_from(schedule.runs).unwrap_or(i64::MAX);
        let on_time = i64::try_from(schedule.runs_on_time).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO snapshot_schedules \
             (name, aggregate_type, aggregate_id, cron, next_run_at, last_run_at, last_outcome, runs, runs_on_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (name) DO UPDATE SET aggregate_type = $2, aggregate_id = $3, cron = $4, \
             next_run_at = $5, last_run_at = $6, last_outcome = $7, runs = $8, runs_on_time = $9",
        )
        .bind(&schedule.name)
        .bind(&schedule.aggregate_type)
        .bind(&schedule.aggregate_id)
        .bind(&schedule.cron)
        .bind(schedule.next_run_at)
        .bind(schedule.last_run_at)
        .bind(&schedule.last_outcome)
        .bind(runs)
        .bind(on_time)
        .execute(&self.pool)
        .await
        .map_err(|e| map_sqlx("storing a snapshot schedule", e))?;
        Ok(())
    }

    async fn schedules(&self) -> StoreResult<Vec<StoredSchedule>> {
        let rows = sqlx::query(LIST)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("listing snapshot schedules", e))?;
        rows.iter().map(schedule).collect()
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM snapshot_schedules WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| map_sqlx("deleting a snapshot schedule", e))?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn due_schedules(
        &self,
        due_by: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<StoredSchedule>> {
        let rows = sqlx::query(DUE)
            .bind(due_by)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_sqlx("loading due snapshot schedules", e))?;
        rows.iter().map(schedule).collect()
    }

    async fn claim_schedule(
        &self,
        name: &str,
        due: DateTime<Utc>,
        next: DateTime<Utc>,
        started: DateTime<Utc>,
        on_time: bool,
    ) -> StoreResult<bool> {
        let claimed = sqlx::query(
            "UPDATE snapshot_schedules SET next_run_at = $3, last_run_at = $4, \
             runs = runs + 1, runs_on_time = runs_on_time + $5 \
             WHERE name = $1 AND next_run_at = $2",
        )
        .bind(name)
        .bind(due)
        .bind(next)
        .bind(started)
        .bind(i64::from(on_time))
        .execute(&self.pool)
        .await
        .map_err(|e| map_sqlx("claiming a snapshot schedule", e))?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn record_schedule_outcome(
        &self,
        name: &str,
        started: DateTime<Utc>,
        outcome: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE snapshot_schedules SET last_outcome = $3 WHERE name = $1 AND last_run_at = $2",
        )
        .bind(name)
        .bind(started)
        .bind(outcome.replace('\0', ""))
        .execute(&self.pool)
        .await
        .map_err(|e| map_sqlx("recording a snapshot schedule's outcome", e))?;
        Ok(())
    }
}
