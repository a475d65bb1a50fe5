//! What [`Aggregate::decide`] sees besides the state and the command: the aggregate's id, the
//! command's id, the version decided on, a [`Clock`] and the [`Services`] registered with the
//! aggregate type.
//!
//! ```
//! use aggregate_actors::{Aggregate, AggregateSettings, Context, Services};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Serialize, Deserialize)]
//! # enum Event { Priced { cents: u64, at: String } }
//! # #[derive(Debug, thiserror::Error)]
//! # #[error("no price list")] struct NoPrices;
//!
//! /// A service: read-only, cheap, synchronous.
//! struct PriceList { per_unit: u64 }
//!
//! struct Quote;
//! impl Aggregate for Quote {
//!     const TYPE: &'static str = "quote";
//!     type Command = u64;
//!     type Event = Event;
//!     type State = ();
//!     type Error = NoPrices;
//!
//!     fn decide(_: &(), units: &u64, ctx: &mut Context<'_, Self>) -> Result<Vec<Event>, NoPrices> {
//!         let prices = ctx.service::<PriceList>().ok_or(NoPrices)?;
//!         Ok(vec![Event::Priced { cents: units * prices.per_unit, at: ctx.now().to_rfc3339() }])
//!     }
//!     fn apply(_: &mut (), _: &Event) {}
//! }
//!
//! let settings = AggregateSettings::<Quote>::new().service(PriceList { per_unit: 250 });
//! # let _ = settings;
//! ```

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;

use crate::aggregate::Aggregate;
use crate::command::CommandId;
use crate::reminder::{Reminder, ReminderRequest};
use crate::timer::{Timer, TimerRequest};

/// Where `decide` reads the time. [`SystemClock`] in production; [`ManualClock`] in tests (the
/// [`TestKit`](crate::testkit::TestKit) uses one), so decisions that stamp or compare times
/// are reproducible.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is set or advanced. Clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(now)))
    }

    /// Moves the clock to `now` (backwards too: clocks in the wild do).
    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock() = now;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock();
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

/// Values registered with an aggregate type (see
/// [`AggregateSettings::service`](crate::AggregateSettings::service)), one per Rust type, that
/// `decide` looks up with [`Context::service`]. Cloning is cheap (the map is shared).
#[derive(Clone, Default)]
pub struct Services {
    map: Option<Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Services {
    /// No services.
    pub const fn new() -> Self {
        Self { map: None }
    }

    /// Registers `value`, replacing an earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let map = self.map.get_or_insert_with(Default::default);
        Arc::make_mut(map).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The registered value of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map
            .as_ref()?
            .get(&TypeId::of::<T>())?
            .downcast_ref::<T>()
    }

    /// How many values are registered.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |map| map.len())
    }

    /// Whether no value is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("len", &self.len())
            .finish()
    }
}

static NO_SERVICES: Services = Services::new();

/// What one decision sees besides the state and the command.
///
/// A context lives for one call of [`Aggregate::decide`]. When a decision is made again (after
/// a version conflict, or when a creation hint proves wrong) it gets a fresh context: anything
/// recorded in the earlier one is dropped with it.
pub struct Context<'a, A: Aggregate> {
    id: &'a str,
    command_id: CommandId,
    version: u64,
    clock: &'a dyn Clock,
    now: Cell<Option<DateTime<Utc>>>,
    services: &'a Services,
    reminders: Vec<ReminderRequest<A>>,
    timers: Vec<TimerRequest<A>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<'a, A: Aggregate> Context<'a, A> {
    /// The context of deciding `command_id` for aggregate `id` on its state at `version`.
    pub fn new(
        id: &'a str,
        command_id: CommandId,
        version: u64,
        clock: &'a dyn Clock,
        services: &'a Services,
    ) -> Self {
        Self {
            id,
            command_id,
            version,
            clock,
            now: Cell::new(None),
            services,
            reminders: Vec::new(),
            timers: Vec::new(),
            aggregate: PhantomData,
        }
    }

    /// A context for calling `decide` directly, e.g. in a unit test: a fresh command id,
    /// version 0, the system clock and no services.
    pub fn standalone(id: &'a str) -> Self {
        Self::new(id, CommandId::new(), 0, &SystemClock, &NO_SERVICES)
    }

    /// The aggregate's id (the stream is `A::TYPE` and this id).
    pub fn id(&self) -> &str {
        self.id
    }

    /// The id of the command being decided: stable across retries of the same command, so it
    /// can seed values that must come out the same each time (e.g. a generated reference).
    pub fn command_id(&self) -> CommandId {
        self.command_id
    }

    /// The version of the state being decided on (0 before the first event).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The time of this decision: read from the clock on the first call, then the same value
    /// for the rest of the decision.
    pub fn now(&self) -> DateTime<Utc> {
        if let Some(now) = self.now.get() {
            return now;
        }
        let now = self.clock.now();
        self.now.set(Some(now));
        now
    }

    /// The service of type `T` registered with the aggregate type, if any.
    pub fn service<T: Send + Sync + 'static>(&self) -> Option<&'a T> {
        self.services.get::<T>()
    }

    /// Schedules `reminder` (replacing one of the same name) as part of this command's
    /// outcome: stored in the same transaction as the command's events, and only if the
    /// command is stored. Needs reminders turned on for the type
    /// ([`AggregateSettings::reminders`](crate::AggregateSettings::reminders)); otherwise the
    /// command fails with [`ExecutorError::RemindersOff`](crate::ExecutorError::RemindersOff)
    /// and stores nothing.
    pub fn schedule_reminder(&mut self, reminder: Reminder<A>) {
        self.reminders.push(ReminderRequest::Schedule(reminder));
    }

    /// Cancels the reminder `name` as part of this command's outcome (nothing if there is
    /// none).
    pub fn cancel_reminder(&mut self, name: impl Into<String>) {
        self.reminders.push(ReminderRequest::Cancel(name.into()));
    }

    /// The names of the reminders this decision scheduled so far, in order.
    pub fn scheduled_reminders(&self) -> Vec<&str> {
        self.reminders
            .iter()
            .filter_map(|request| match request {
                ReminderRequest::Schedule(reminder) => Some(reminder.name()),
                ReminderRequest::Cancel(_) => None,
            })
            .collect()
    }

    /// Starts `timer` (replacing a running one of the same name) if this command succeeds: it
    /// sends its command to this aggregate while its actor stays live, and ends with it. Not
    /// stored; see [`crate::timer`] for how timers differ from reminders.
    pub fn start_timer(&mut self, timer: Timer<A>) {
        self.timers.push(TimerRequest::Start(timer));
    }

    /// Cancels the timer `name` if this command succeeds (nothing if there is none).
    pub fn cancel_timer(&mut self, name: impl Into<String>) {
        self.timers.push(TimerRequest::Cancel(name.into()));
    }

    /// The names of the timers this decision started so far, in order.
    pub fn started_timers(&self) -> Vec<&str> {
        self.timers
            .iter()
            .filter_map(|request| match request {
                TimerRequest::Start(timer) => Some(timer.name()),
                TimerRequest::Cancel(_) => None,
            })
            .collect()
    }

    /// The reminder and timer changes this decision asked for.
    pub(crate) fn take_requests(&mut self) -> (Vec<ReminderRequest<A>>, Vec<TimerRequest<A>>) {
        (
            std::mem::take(&mut self.reminders),
            std::mem::take(&mut self.timers),
        )
    }
}

impl<A: Aggregate> fmt::Debug for Context<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("aggregate_type", &A::TYPE)
            .field("id", &self.id)
            .field("command_id", &self.command_id)
            .field("version", &self.version)
            .field("services", &self.services.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_found_by_type_and_replaced_by_a_second_insert() {
        let mut services = Services::new();
        assert!(services.get::<u32>().is_none());
        services.insert(7_u32);
        services.insert("rates");
        services.insert(9_u32);
        assert_eq!(services.get::<u32>(), Some(&9));
        assert_eq!(services.get::<&str>(), Some(&"rates"));
        assert!(services.get::<u64>().is_none());
        assert_eq!(services.len(), 2);
    }

    #[test]
    fn clones_of_services_do_not_see_later_inserts_of_the_original() {
        let mut first = Services::new();
        first.insert(1_u8);
        let second = first.clone();
        first.insert(2_u16);
        assert_eq!(second.len(), 1);
        assert_eq!(first.len(), 2);
    }

    #[test]
    fn a_manual_clock_stands_still_until_moved_and_clones_share_it() {
        let start = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let clock = ManualClock::new(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::minutes(5));
        assert_eq!(clock.now(), start + Duration::minutes(5));
        clock.set(start);
        assert_eq!(shared.now(), start);
    }
}
