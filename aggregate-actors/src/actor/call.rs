//! What travels to an aggregate actor with a command, and what comes back.

use actor_runtime::Reply;
use event_stores::{EventMetadata, StoreError};

use super::reminders::Firing;
use crate::aggregate::Aggregate;
use crate::command::CommandId;
use crate::error::CommandError;
use crate::outcome::Committed;

pub(super) type CommandReply<A> = Reply<CommandAnswer<A>>;

/// What an actor answers to a command sent to it.
pub(crate) enum CommandAnswer<A: Aggregate> {
    /// The command's outcome.
    Outcome(Result<Committed<A>, CommandError<A::Error>>),
    /// Nothing stored: the database refused the append because another node owns the
    /// aggregate now (a takeover this node has not seen yet). The command comes back, so the
    /// sender can take it to the new owner within its deadline.
    Fenced {
        /// The command, unstored.
        command: A::Command,
        /// The fence's refusal.
        error: StoreError,
    },
}

/// What travels with a command besides the command itself.
pub(crate) struct CommandCall {
    pub(crate) command_id: CommandId,
    pub(crate) metadata: EventMetadata,
    /// When the caller stops waiting; the command is not started after it.
    pub(crate) deadline: tokio::time::Instant,
    /// The caller's whole time budget, which ends at `deadline`: what a timeout reports.
    pub(crate) budget: std::time::Duration,
    /// The caller's span (the executor's `execute`), parent of the actor's `command` span, so
    /// one command reads as one tree across the task boundary.
    pub(crate) span: tracing::Span,
    /// The reminder this command is the firing of, if it is one.
    pub(crate) firing: Option<Box<Firing>>,
    /// The id was made for this call and sent nowhere before: no earlier attempt can have
    /// stored it, so an answer that stores nothing needs no look at the store first.
    pub(crate) first_attempt: bool,
}
