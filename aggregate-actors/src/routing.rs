//! Waiting for a route: a short exponential backoff bounded by the call's deadline, for ids
//! whose owner is moving or cannot be reached yet.

use std::time::Duration;

use tokio::time::Instant;

const FIRST: Duration = Duration::from_millis(10);
const MOST: Duration = Duration::from_millis(250);

/// Backoff between attempts to reach an id's owner, until a deadline.
pub(crate) struct Backoff {
    deadline: Instant,
    next: Duration,
}

impl Backoff {
    /// Attempts until `deadline`.
    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            next: FIRST,
        }
    }

    /// Time left before the deadline.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps before the next attempt; false (without sleeping) when that attempt would start
    /// past the deadline.
    pub(crate) async fn wait(&mut self) -> bool {
        if Instant::now() + self.next >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(MOST);
        true
    }
}
