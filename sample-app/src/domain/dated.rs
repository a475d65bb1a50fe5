//! Commands stamped with the time they were issued.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A command together with the instant it was issued.
///
/// `decide` must be a pure function of state and command (it may run again after a version
/// conflict, and tests compare its events exactly), so it may not read the clock. The caller
/// reads the clock once, here, and the events carry that instant: replays, tests and the demo
/// (which simulates a year of bookings) all see the same dates.
///
/// The one exception is a reminder's due time, which lives on the scheduler's wall clock rather
/// than in an event: `freeze` schedules its review from `Context::now`, the clock the framework
/// hands `decide` (a manual one in the test kit), not from `at` (see
/// [`Account`](super::Account)).
///
/// Serializable, so that a command can travel to the node that owns its aggregate (cluster
/// mode) with the instant it was issued at on the node that received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dated<C> {
    /// What to do.
    pub command: C,
    /// When it was asked for.
    pub at: DateTime<Utc>,
}

impl<C> Dated<C> {
    /// `command`, issued now.
    pub fn now(command: C) -> Self {
        Self {
            command,
            at: Utc::now(),
        }
    }

    /// `command`, issued at `at`.
    pub fn at(command: C, at: DateTime<Utc>) -> Self {
        Self { command, at }
    }
}
