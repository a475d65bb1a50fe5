//! Waiting for a route: a short exponential backoff bounded by the call's deadline, for ids
//! whose owner is moving or cannot be reached yet.

use std::time::Duration;

use actor_runtime::{Location, Placement};
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

/// Where the next attempt at a call goes.
pub(crate) enum Hop {
    /// This node serves the id.
    Here,
    /// The node at this address does (as far as the route table knows).
    There(String),
}

/// The attempts of one call at reaching its id's owner: ask the placement, try, and on a
/// retryable miss ask again after a backoff, until the deadline.
pub(crate) struct Route<'a> {
    placement: &'a dyn Placement<String>,
    key: &'a String,
    backoff: Backoff,
    /// Whether calls for this type may travel to other nodes at all.
    forwarding: bool,
    tried: bool,
}

impl<'a> Route<'a> {
    /// The attempts at `key` until `deadline`.
    pub(crate) fn new(
        placement: &'a dyn Placement<String>,
        key: &'a String,
        deadline: Instant,
        forwarding: bool,
    ) -> Self {
        Self {
            placement,
            key,
            backoff: Backoff::until(deadline),
            forwarding,
            tried: false,
        }
    }

    /// Where to try next; `None` when there is no next attempt (the deadline is near, or the
    /// id is not served here and cannot be forwarded).
    pub(crate) async fn next(&mut self) -> Option<Hop> {
        loop {
            if std::mem::replace(&mut self.tried, true) {
                // The last hop did not answer for the id: let the placement look again.
                self.placement.missed(self.key);
                if !self.backoff.wait().await {
                    return None;
                }
            }
            match self.placement.locate(self.key) {
                Location::Local => return Some(Hop::Here),
                Location::Remote(node) if self.forwarding => return Some(Hop::There(node)),
                // Owner moving or not known yet: wait for the route table.
                Location::Unknown if self.forwarding => {}
                Location::Remote(_) | Location::Unknown => return None,
            }
        }
    }

    /// Time left for the next attempt.
    pub(crate) fn remaining(&self) -> Duration {
        self.backoff.remaining()
    }
}
