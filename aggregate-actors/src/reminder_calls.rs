//! The executor's reminder calls: schedule, cancel and list an aggregate's reminders from
//! outside, and fire a due one (what the [`Scheduler`](crate::scheduler::Scheduler) does).

use event_stores::{StoredReminder, StreamId};

use crate::actor::AggregateMessage;
use crate::aggregate::Aggregate;
use crate::error::ExecutorError;
use crate::executor::Executor;
use crate::reminder::{FireOutcome, Reminder, ReminderRequest, ReminderView};

impl Executor {
    /// Schedules `reminder` for aggregate `id` (replacing one of the same name), through the
    /// aggregate's actor, as the stream's single writer. Needs reminders turned on for `A`
    /// ([`AggregateSettings::reminders`](crate::AggregateSettings::reminders)).
    pub async fn remind<A: Aggregate>(
        &self,
        id: &str,
        reminder: Reminder<A>,
    ) -> Result<(), ExecutorError> {
        self.change_reminders::<A>(id, vec![ReminderRequest::Schedule(reminder)])
            .await
    }

    /// Cancels aggregate `id`'s reminder `name` (nothing if there is none).
    pub async fn cancel_reminder<A: Aggregate>(
        &self,
        id: &str,
        name: &str,
    ) -> Result<(), ExecutorError> {
        self.change_reminders::<A>(id, vec![ReminderRequest::Cancel(name.to_owned())])
            .await
    }

    /// Aggregate `id`'s reminders, by name, read from the store.
    pub async fn reminders<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<ReminderView>, ExecutorError> {
        self.registration::<A>(id)?;
        let stream = StreamId::new(A::TYPE, id)?;
        let stored = self.event_store().reminders_of(&stream).await?;
        Ok(stored.iter().map(ReminderView::from).collect())
    }

    /// Fires a due reminder (as [`EventStore::due_reminders`](event_stores::EventStore::due_reminders)
    /// returned it) through its aggregate's actor on this node.
    pub async fn fire_reminder(&self, reminder: StoredReminder) -> FireOutcome {
        if self.is_shut_down() {
            return FireOutcome::Failed(ExecutorError::ShuttingDown);
        }
        let aggregate_type = reminder.stream.aggregate_type().to_owned();
        match self.registered_by_name(&aggregate_type) {
            Some(registered) => registered.fire(reminder).await,
            None => FireOutcome::Unserved,
        }
    }

    async fn change_reminders<A: Aggregate>(
        &self,
        id: &str,
        requests: Vec<ReminderRequest<A>>,
    ) -> Result<(), ExecutorError> {
        let registration = self.registration::<A>(id)?;
        if registration.context.settings.reminders.is_none() {
            return Err(ExecutorError::RemindersOff {
                aggregate_type: A::TYPE,
            });
        }
        let key = id.to_owned();
        registration
            .directory
            .call(&key, |reply| AggregateMessage::ChangeReminders {
                requests,
                reply,
            })
            .await?
    }
}
