//! Durable reminders: an aggregate asks to be sent a command later.
//!
//! `decide` schedules, replaces or cancels reminders through its [`Context`](crate::Context)
//! ([`schedule_reminder`](crate::Context::schedule_reminder),
//! [`cancel_reminder`](crate::Context::cancel_reminder)); the changes are stored in the same
//! transaction as the command's events, so there is no reminder without its command and no
//! command without its reminder. From outside, [`Executor::remind`](crate::Executor::remind)
//! and [`Executor::cancel_reminder`](crate::Executor::cancel_reminder) do the same through the
//! aggregate's actor, and [`Executor::reminders`](crate::Executor::reminders) lists them.
//!
//! A [`Scheduler`](crate::scheduler::Scheduler) per node loads due reminders and delivers each
//! one's command through the aggregate's actor with a command id derived from the reminder's
//! id and due time, and the same append that stores the command's events moves the reminder
//! on (a periodic one to its next due time, a one-shot one away). So a reminder fires exactly
//! once even across a crash: a firing whose append did not commit is retried with the same
//! command id, which the aggregate recognises if it had committed after all.
//!
//! - A replaced or cancelled reminder never fires in its old form: the actor checks, before
//!   delivering, that the reminder it was asked to fire is still the stored one, and the store
//!   checks it again in the append that records the firing, which it refuses whole (the
//!   command's events included) if the reminder changed meanwhile, say by another executor on
//!   the same store: the firing is then [`FireOutcome::Stale`].
//! - A command refused when its reminder fires is recorded (a one-shot reminder is kept as
//!   `Rejected` with the error; a periodic one moves on with the error noted), not retried.
//! - A periodic reminder that was missed (the process was down for several periods) fires
//!   once, then continues from its first due time in the future: missed periods are not
//!   replayed one by one.
//! - A period longer than the span of the years the stores keep ([`REMINDER_YEARS`], about
//!   10 000 years) is refused when the reminder is scheduled, with a typed
//!   [`InvalidInput::BadReminderPeriod`](event_stores::InvalidInput::BadReminderPeriod), and
//!   nothing is stored. A periodic reminder whose next due time would fall after the last of
//!   those years fires its last time and is then removed, like a one-shot one.
//!
//! Reminders are for aggregate types registered with reminders turned on
//! ([`AggregateSettings::reminders`](crate::AggregateSettings::reminders)), whose commands can
//! be stored (`Serialize + DeserializeOwned`).
//!
//! **Timers** ([`crate::timer`]) are the other, non-durable kind: commands a live aggregate
//! sends itself while it stays in memory, gone on passivation or restart. Use a reminder
//! whenever the command must be sent even if the process stops.

use chrono::{DateTime, Datelike, Duration, SubsecRound, Utc};
use event_stores::{REMINDER_YEARS, ReminderChange, ReminderState, StoredReminder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::codec::{self, CodecError};
use crate::command::CommandId;

/// A reminder to schedule: a name (unique per aggregate; scheduling the name again replaces
/// it), a due time, an optional period, and the command to deliver.
///
/// ```
/// # use aggregate_actors::{Aggregate, Context, reminder::Reminder};
/// # use chrono::Duration;
/// # #[derive(serde::Serialize, serde::Deserialize)] enum Cmd { Reserve, Expire }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] enum Ev { Reserved }
/// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
/// # struct Seat;
/// # impl Aggregate for Seat {
/// #     const TYPE: &'static str = "seat";
/// #     type Command = Cmd; type Event = Ev; type State = (); type Error = No;
/// fn decide(_: &(), command: &Cmd, ctx: &mut Context<'_, Self>) -> Result<Vec<Ev>, No> {
///     // Expire the reservation in 15 minutes, unless it is confirmed (cancelled) before.
///     let expiry = Reminder::at("expire", ctx.now() + Duration::minutes(15), Cmd::Expire);
///     ctx.schedule_reminder(expiry);
///     Ok(vec![Ev::Reserved])
/// }
/// #     fn apply(_: &mut (), _: &Ev) {}
/// # }
/// ```
pub struct Reminder<A: Aggregate> {
    pub(crate) name: String,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) period: Option<Duration>,
    pub(crate) command: A::Command,
}

impl<A: Aggregate> Reminder<A> {
    /// A reminder named `name` that sends `command` at `due_at` (kept to the microsecond, as
    /// the stores keep it).
    pub fn at(name: impl Into<String>, due_at: DateTime<Utc>, command: A::Command) -> Self {
        Self {
            name: name.into(),
            due_at: due_at.trunc_subsecs(6),
            period: None,
            command,
        }
    }

    /// Makes it periodic: after each firing it is due again `period` later (at least 1 ms). A
    /// period longer than the span of [`REMINDER_YEARS`] (about 10 000 years) is refused with
    /// [`InvalidInput::BadReminderPeriod`](event_stores::InvalidInput::BadReminderPeriod) when
    /// the reminder is scheduled, and a reminder whose next time would fall after the last of
    /// those years fires its last time and is removed.
    pub fn every(mut self, period: Duration) -> Self {
        self.period = Some(period);
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it is due first.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.due_at
    }

    /// Its period, if periodic.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }

    /// The command it delivers.
    pub fn command(&self) -> &A::Command {
        &self.command
    }
}

/// A change `decide` (or a caller) asked for.
pub(crate) enum ReminderRequest<A: Aggregate> {
    Schedule(Reminder<A>),
    Cancel(String),
}

/// How an aggregate type's commands are stored in reminders.
pub struct ReminderCodec<A: Aggregate> {
    encode: fn(&A::Command) -> Result<Vec<u8>, CodecError>,
    decode: fn(&[u8]) -> Result<A::Command, CodecError>,
}

impl<A: Aggregate> Clone for ReminderCodec<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: Aggregate> Copy for ReminderCodec<A> {}

impl<A: Aggregate> std::fmt::Debug for ReminderCodec<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReminderCodec(MessagePack)")
    }
}

impl<A: Aggregate> ReminderCodec<A>
where
    A::Command: Serialize + DeserializeOwned,
{
    /// MessagePack with named fields, like events.
    pub fn msgpack() -> Self {
        Self {
            encode: |c| codec::encode(c),
            decode: |b| codec::decode(b),
        }
    }
}

impl<A: Aggregate> ReminderCodec<A> {
    /// The stored form of `requests`, in order.
    pub(crate) fn changes(
        &self,
        requests: Vec<ReminderRequest<A>>,
    ) -> Result<Vec<ReminderChange>, CodecError> {
        requests
            .into_iter()
            .map(|request| match request {
                ReminderRequest::Schedule(reminder) => Ok(ReminderChange::Schedule {
                    payload: (self.encode)(&reminder.command)?.into(),
                    name: reminder.name,
                    reminder_id: Uuid::now_v7(),
                    due_at: reminder.due_at,
                    period_ms: reminder.period.map(period_ms),
                }),
                ReminderRequest::Cancel(name) => Ok(ReminderChange::Cancel { name }),
            })
            .collect()
    }

    /// The command a stored reminder delivers.
    pub(crate) fn command(&self, reminder: &StoredReminder) -> Result<A::Command, CodecError> {
        (self.decode)(&reminder.payload)
    }
}

/// A period in whole milliseconds; shorter than 1 ms (or negative) is stored as 0, which the
/// store refuses as invalid input.
fn period_ms(period: Duration) -> u64 {
    u64::try_from(period.num_milliseconds()).unwrap_or(0)
}

/// The command id a reminder's firing at `due_at` runs under: the same for every attempt of
/// that firing, different for every firing.
pub(crate) fn firing_command_id(reminder_id: Uuid, due_at: DateTime<Utc>) -> CommandId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x1f7c_52a0_93e4_4b1d_8c6f_0d2e_7a95_b3c8);
    let mut name = reminder_id.as_bytes().to_vec();
    name.extend_from_slice(&due_at.timestamp_micros().to_be_bytes());
    CommandId::from(Uuid::new_v5(&NAMESPACE, &name))
}

/// When a periodic reminder due at `due_at` is due next, seen at `now`: the first due time
/// after `now` (missed periods are skipped, not fired one by one). None when that time falls
/// outside [`REMINDER_YEARS`] (the years the stores keep): the reminder has no next occurrence.
pub(crate) fn next_due(
    due_at: DateTime<Utc>,
    period_ms: u64,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let period = i64::try_from(period_ms.max(1)).ok()?;
    let behind = (now - due_at).num_milliseconds().max(0);
    let periods = behind / period + 1;
    let next =
        due_at.checked_add_signed(Duration::try_milliseconds(periods.checked_mul(period)?)?)?;
    REMINDER_YEARS.contains(&next.year()).then_some(next)
}

/// A stored reminder as a caller sees it (its command stays encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReminderView {
    /// Its name.
    pub name: String,
    /// The id of its current schedule.
    pub reminder_id: Uuid,
    /// When it is due next.
    pub due_at: DateTime<Utc>,
    /// Its period, if periodic.
    pub period: Option<Duration>,
    /// Whether it is still fired.
    pub state: ReminderState,
    /// Why its last firing failed, if it did.
    pub last_error: Option<String>,
    /// When it last fired.
    pub last_fired_at: Option<DateTime<Utc>>,
}

impl From<&StoredReminder> for ReminderView {
    fn from(stored: &StoredReminder) -> Self {
        Self {
            name: stored.name.clone(),
            reminder_id: stored.reminder_id,
            due_at: stored.due_at,
            period: stored
                .period_ms
                .map(|ms| Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))),
            state: stored.state,
            last_error: stored.last_error.clone(),
            last_fired_at: stored.last_fired_at,
        }
    }
}

/// What became of one firing.
#[derive(Debug)]
#[non_exhaustive]
pub enum FireOutcome {
    /// The command was stored (or had been, by an earlier attempt of this firing), and the
    /// reminder moved on in the same append.
    Fired {
        /// The aggregate's version after it.
        version: u64,
        /// True when an earlier attempt had stored it.
        duplicate: bool,
    },
    /// The aggregate refused the command; that is recorded on the reminder.
    Rejected(String),
    /// The reminder is no longer the one asked to fire (replaced, cancelled, already moved
    /// on): nothing was delivered.
    Stale,
    /// The firing could not be carried out now; it stays due and is tried again.
    Failed(crate::ExecutorError),
    /// No aggregate type of the reminder's type name is registered with this executor: left
    /// for an executor that serves it.
    Unserved,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    #[test]
    fn a_missed_periodic_reminder_is_due_next_at_its_first_time_after_now() {
        assert_eq!(next_due(at(0), 10_000, at(0)), Some(at(10)));
        assert_eq!(next_due(at(0), 10_000, at(3)), Some(at(10)));
        assert_eq!(next_due(at(0), 10_000, at(10)), Some(at(20)));
        assert_eq!(
            next_due(at(0), 10_000, at(95)),
            Some(at(100)),
            "nine periods skipped"
        );
        assert_eq!(
            next_due(at(50), 10_000, at(0)),
            Some(at(60)),
            "not yet due: one period on"
        );
    }

    #[test]
    fn a_period_beyond_every_storable_time_gives_no_next_due_time_and_no_panic() {
        let longest = u64::try_from(i64::MAX).unwrap_or(u64::MAX);
        assert_eq!(next_due(at(0), longest, at(0)), None);
        assert_eq!(next_due(at(0), u64::MAX, at(0)), None);
        let last_year = DateTime::parse_from_rfc3339("9999-12-31T23:00:00Z")
            .map(|t| t.to_utc())
            .unwrap_or_default();
        assert_eq!(
            next_due(last_year, 3_600_000 * 2, last_year),
            None,
            "after the last year a store keeps"
        );
        assert_eq!(
            next_due(last_year, 1_800_000, last_year),
            Some(last_year + Duration::minutes(30))
        );
    }

    #[test]
    fn each_firing_has_its_own_command_id_and_every_attempt_of_it_the_same() {
        let reminder = Uuid::now_v7();
        assert_eq!(
            firing_command_id(reminder, at(5)),
            firing_command_id(reminder, at(5))
        );
        assert_ne!(
            firing_command_id(reminder, at(5)),
            firing_command_id(reminder, at(6))
        );
        assert_ne!(
            firing_command_id(reminder, at(5)),
            firing_command_id(Uuid::now_v7(), at(5))
        );
    }
}
