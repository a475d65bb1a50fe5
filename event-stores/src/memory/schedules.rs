//! [`InMemoryScheduleStore`]: snapshot schedules in one mutex-guarded map (schedules are few
//! and touched a few times a minute at most).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use parking_lot::Mutex;

use crate::{ScheduleStore, StoreResult, StoredSchedule};

/// Snapshot schedules in memory. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct InMemoryScheduleStore {
    schedules: Arc<Mutex<BTreeMap<String, StoredSchedule>>>,
}

impl InMemoryScheduleStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ScheduleStore for InMemoryScheduleStore {
    async fn put_schedule(&self, mut schedule: StoredSchedule) -> StoreResult<()> {
        schedule.validate()?;
        // The precision PostgreSQL keeps, so both backends give back equal times.
        schedule.next_run_at = schedule.next_run_at.trunc_subsecs(6);
        schedule.last_run_at = schedule.last_run_at.map(|at| at.trunc_subsecs(6));
        self.schedules
            .lock()
            .insert(schedule.name.clone(), schedule);
        Ok(())
    }

    async fn schedules(&self) -> StoreResult<Vec<StoredSchedule>> {
        Ok(self.schedules.lock().values().cloned().collect())
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        Ok(self.schedules.lock().remove(name).is_some())
    }

    async fn due_schedules(
        &self,
        due_by: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<StoredSchedule>> {
        let mut due: Vec<StoredSchedule> = self
            .schedules
            .lock()
            .values()
            .filter(|s| s.next_run_at <= due_by)
            .cloned()
            .collect();
        due.sort_by(|a, b| (a.next_run_at, &a.name).cmp(&(b.next_run_at, &b.name)));
        due.truncate(limit);
        Ok(due)
    }

    async fn claim_schedule(
        &self,
        name: &str,
        due: DateTime<Utc>,
        next: DateTime<Utc>,
        started: DateTime<Utc>,
        on_time: bool,
    ) -> StoreResult<bool> {
        let mut schedules = self.schedules.lock();
        let Some(schedule) = schedules.get_mut(name) else {
            return Ok(false);
        };
        if schedule.next_run_at != due.trunc_subsecs(6) {
            return Ok(false);
        }
        schedule.next_run_at = next.trunc_subsecs(6);
        schedule.last_run_at = Some(started.trunc_subsecs(6));
        schedule.runs += 1;
        schedule.runs_on_time += u64::from(on_time);
        Ok(true)
    }

    async fn record_schedule_outcome(
        &self,
        name: &str,
        started: DateTime<Utc>,
        outcome: &str,
    ) -> StoreResult<()> {
        if let Some(schedule) = self.schedules.lock().get_mut(name)
            && schedule.last_run_at == Some(started.trunc_subsecs(6))
        {
            schedule.last_outcome = Some(outcome.to_owned());
        }
        Ok(())
    }
}
