//! Command identity and per-call options: the command id that makes retries safe, the deadline
//! after which a command is no longer wanted, and the metadata stored with its events.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use event_stores::{EventMetadata, TraceParent};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uuid::timestamp::context::{ContextV7, ThreadLocalContext};
use uuid::{Timestamp, Uuid};

/// Identifies one command across retries, processes and nodes.
///
/// Every event a command stores carries its id, and the events' ids are derived from it, so
/// sending the same command id again never applies the command twice: the aggregate answers
/// with the original outcome (see [`Committed::duplicate`](crate::Committed::duplicate)).
/// Use your own id (an idempotency key from your client, a message id from your queue) with
/// [`CommandOptions::command_id`], or let [`Executor::execute`](crate::Executor::execute)
/// generate one (a UUID v7).
///
/// ```
/// use aggregate_actors::CommandId;
///
/// let id: CommandId = "0191a4c6-1f4e-7c3a-9b1e-2f6d8a4b5c6d".parse()?;
/// assert_eq!(id.to_string(), "0191a4c6-1f4e-7c3a-9b1e-2f6d8a4b5c6d");
/// assert_ne!(CommandId::new(), CommandId::new());
/// # Ok::<_, uuid::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(Uuid);

impl CommandId {
    /// A fresh, time-ordered id (UUID v7): ids made on one thread are ordered as they were
    /// made; across threads, by their millisecond.
    pub fn new() -> Self {
        // A context per thread, not `Uuid::now_v7`'s one behind a process-wide mutex, which
        // every command of every core would take.
        thread_local! {
            static CONTEXT: ContextV7 = const { ContextV7::new() };
        }
        static PER_THREAD: ThreadLocalContext<ContextV7> = ThreadLocalContext::new(&CONTEXT);
        Self(Uuid::new_v7(Timestamp::now(&PER_THREAD)))
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// A deterministic id derived from any caller key (an HTTP `Idempotency-Key`, a message id
    /// that is not a UUID): the same key always gives the same id (UUID v5 in a namespace of
    /// this crate's own).
    pub fn from_key(key: &str) -> Self {
        const NAMESPACE: Uuid = Uuid::from_u128(0x6a2f_1c8e_4d3b_5e7a_9f10_2b4c_6d8e_0a1b);
        Self(Uuid::new_v5(&NAMESPACE, key.as_bytes()))
    }
}

impl Default for CommandId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for CommandId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl From<CommandId> for Uuid {
    fn from(id: CommandId) -> Self {
        id.0
    }
}

impl FromStr for CommandId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({})", self.0)
    }
}

/// Options of one [`Executor::execute_with`](crate::Executor::execute_with) call.
///
/// ```
/// use std::time::Duration;
/// use aggregate_actors::{CommandId, CommandOptions};
///
/// let options = CommandOptions::new()
///     .command_id(CommandId::from_key("order-42/pay"))
///     .timeout(Duration::from_secs(2));
/// assert!(options.command_id.is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// The command's id; a fresh one when `None`. Retry with the same id after an
    /// [`Indeterminate`](crate::CommandError::Indeterminate) outcome.
    pub command_id: Option<CommandId>,
    /// How long the caller waits, activation and queueing included; the aggregate type's
    /// `call_timeout` when `None`. The command carries the resulting deadline: if it has passed
    /// (or the caller has gone) when the command's turn comes, the command is dropped before
    /// `decide` and stores nothing.
    pub timeout: Option<Duration>,
    /// An absolute deadline; the earlier of this and `timeout` applies.
    pub deadline: Option<Instant>,
    /// Correlation and causation ids and the caller's trace context, stored with every event.
    pub metadata: EventMetadata,
}

impl CommandOptions {
    /// No id (one is generated), the type's call timeout, empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the command id.
    pub fn command_id(mut self, id: CommandId) -> Self {
        self.command_id = Some(id);
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets an absolute deadline.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the correlation and causation ids and the trace context.
    pub fn metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the caller's W3C trace context (its `traceparent`), stored with every event of the
    /// command and recorded on the command's span as `trace_id`.
    pub fn trace_parent(mut self, trace_parent: TraceParent) -> Self {
        self.metadata.trace_parent = Some(trace_parent);
        self
    }

    /// The time left to wait at `now`, given the type's default timeout.
    pub(crate) fn budget_at(&self, now: Instant, default_timeout: Duration) -> Duration {
        let timeout = self.timeout.unwrap_or(default_timeout);
        match self.deadline {
            Some(deadline) => timeout.min(deadline.saturating_duration_since(now)),
            None => timeout,
        }
    }
}

impl From<EventMetadata> for CommandOptions {
    fn from(metadata: EventMetadata) -> Self {
        Self::new().metadata(metadata)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fresh_ids_are_v7_ordered_on_a_thread_and_distinct_across_threads() {
        let made: Vec<Vec<CommandId>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..20_000).map(|_| CommandId::new()).collect::<Vec<_>>()))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for ids in &made {
            assert!(
                ids.windows(2).all(|pair| pair[0] < pair[1]),
                "not ordered as made"
            );
            assert!(ids.iter().all(|id| id.as_uuid().get_version_num() == 7));
        }
        let all: std::collections::HashSet<CommandId> = made.iter().flatten().copied().collect();
        assert_eq!(all.len(), 80_000);
    }

    #[test]
    fn keys_map_to_stable_distinct_ids() {
        assert_eq!(CommandId::from_key("a"), CommandId::from_key("a"));
        assert_ne!(CommandId::from_key("a"), CommandId::from_key("b"));
    }

    #[tokio::test]
    async fn the_budget_is_the_earlier_of_timeout_and_deadline() {
        let default = Duration::from_secs(30);
        let now = Instant::now();
        assert_eq!(CommandOptions::new().budget_at(now, default), default);
        let short = CommandOptions::new().timeout(Duration::from_secs(1));
        assert_eq!(short.budget_at(now, default), Duration::from_secs(1));
        let past = CommandOptions::new().deadline(now - Duration::from_secs(1));
        assert_eq!(past.budget_at(now, default), Duration::ZERO);
    }
}
