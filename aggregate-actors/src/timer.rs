//! Timers: an aggregate asks its live actor to send it a command later, or every so often.
//!
//! `decide` starts or cancels timers through its [`Context`](crate::Context)
//! ([`start_timer`](crate::Context::start_timer), [`cancel_timer`](crate::Context::cancel_timer)).
//! Like reminders, the change takes effect only if the command succeeds (its events stored, or
//! none to store); unlike reminders, nothing is stored:
//!
//! | | timer | [reminder](crate::reminder) |
//! |---|---|---|
//! | lives | while the aggregate's actor is live | in the event store, until fired or cancelled |
//! | on passivation, eviction, a crash, a restart, a shard move | gone | fires on whichever node owns the aggregate then |
//! | keeps the aggregate live | no (a tick is not traffic) | no (a firing activates it) |
//! | firing | at most once per tick, a fresh command id | exactly once, a command id derived from (reminder, due time) |
//! | command | any `A::Command` (periodic: `Clone`) | serialisable |
//! | cost | a Tokio task | a row written with the command's events, a scheduler |
//!
//! Use a timer for work that only matters while the aggregate is in memory anyway (refresh a
//! cached quote every few seconds, retry a pending step soon); use a reminder for anything
//! that must happen even if the process stops (expire a reservation, close an idle account).
//!
//! A tick delivers the command through the aggregate's mailbox like any other: decided on the
//! current state, appended, applied. A rejected tick is logged and counted
//! (`aggregate_timer_ticks_total{outcome="rejected"}`), never retried; the timer goes on.

use std::sync::Arc;
use std::time::Duration;

use crate::aggregate::Aggregate;

/// A timer to start: a name (unique per aggregate; starting the name again replaces the
/// running timer), a delay, an optional period, and the command to deliver.
///
/// ```
/// # use std::time::Duration;
/// # use aggregate_actors::{Aggregate, Context, timer::Timer};
/// # #[derive(Clone)] enum Cmd { Quote, Refresh }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] enum Ev { Quoted }
/// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
/// # struct Desk;
/// # impl Aggregate for Desk {
/// #     const TYPE: &'static str = "desk";
/// #     type Command = Cmd; type Event = Ev; type State = (); type Error = No;
/// fn decide(_: &(), command: &Cmd, ctx: &mut Context<'_, Self>) -> Result<Vec<Ev>, No> {
///     if let Cmd::Quote = command {
///         // Refresh the quote every 5 s while this desk is in memory.
///         ctx.start_timer(Timer::every("refresh", Duration::from_secs(5), Cmd::Refresh));
///     }
///     Ok(vec![Ev::Quoted])
/// }
/// #     fn apply(_: &mut (), _: &Ev) {}
/// # }
/// ```
pub struct Timer<A: Aggregate> {
    pub(crate) name: String,
    pub(crate) delay: Duration,
    pub(crate) command: TimerCommand<A>,
}

/// What a timer sends: one command once, or a fresh copy every period.
pub(crate) enum TimerCommand<A: Aggregate> {
    Once(A::Command),
    Every(Arc<dyn Fn() -> A::Command + Send + Sync>),
}

impl<A: Aggregate> Timer<A> {
    /// A timer named `name` that sends `command` once, `delay` from when the command that
    /// starts it succeeds.
    pub fn after(name: impl Into<String>, delay: Duration, command: A::Command) -> Self {
        Self {
            name: name.into(),
            delay,
            command: TimerCommand::Once(command),
        }
    }

    /// A timer named `name` that sends a copy of `command` every `period` (first one `period`
    /// from when the command that starts it succeeds) until cancelled or the aggregate
    /// passivates. Ticks missed while the runtime was busy are skipped.
    pub fn every(name: impl Into<String>, period: Duration, command: A::Command) -> Self
    where
        A::Command: Clone,
    {
        Self {
            name: name.into(),
            delay: period,
            command: TimerCommand::Every(Arc::new(move || command.clone())),
        }
    }

    /// The timer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The delay before the first tick (the period, for a periodic timer).
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Whether the timer ticks every [`delay`](Self::delay) rather than once.
    pub fn is_periodic(&self) -> bool {
        matches!(self.command, TimerCommand::Every(_))
    }
}

impl<A: Aggregate> std::fmt::Debug for Timer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("name", &self.name)
            .field("delay", &self.delay)
            .field("periodic", &self.is_periodic())
            .finish()
    }
}

/// A timer change a decision asked for.
pub(crate) enum TimerRequest<A: Aggregate> {
    Start(Timer<A>),
    Cancel(String),
}
