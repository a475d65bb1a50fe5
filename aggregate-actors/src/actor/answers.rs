//! The answers a command gets besides its decision, and how each is counted.

use super::{AggregateActor, CommandCall};
use crate::aggregate::Aggregate;
use crate::command::CommandId;
use crate::error::{CommandError, ExecutorError, Indeterminate};
use crate::outcome::Committed;

impl<A: Aggregate> AggregateActor<A> {
    /// Counts a command's outcome in the type's metrics.
    pub(super) fn count_outcome(&self, outcome: &Result<Committed<A>, CommandError<A::Error>>) {
        let metrics = &self.context.metrics;
        match outcome {
            Ok(committed) if committed.duplicate => metrics.command_duplicate(),
            Ok(_) => metrics.command_succeeded(),
            Err(CommandError::Rejected(_)) => metrics.command_rejected(),
            Err(CommandError::NotStored(ExecutorError::Expired { .. })) => {
                metrics.command_expired()
            }
            Err(CommandError::NotStored(_)) => metrics.command_failed(),
            Err(CommandError::Indeterminate(_)) => metrics.command_indeterminate(),
        }
    }

    /// Not started, so not stored: past its deadline, or nobody waits for it any more.
    pub(super) fn expired(&self, command_id: CommandId) -> CommandError<A::Error> {
        CommandError::NotStored(ExecutorError::Expired {
            id: self.stream.aggregate_id().to_owned(),
            command_id,
        })
    }

    pub(super) fn indeterminate(
        &self,
        call: &CommandCall,
        cause: ExecutorError,
    ) -> CommandError<A::Error> {
        CommandError::Indeterminate(Indeterminate {
            id: self.stream.aggregate_id().to_owned(),
            command_id: call.command_id,
            cause,
        })
    }

    /// The deadline passed while a store call whose effect is unknown ran. It reports the
    /// command's own budget, as the executor's timeout does, not the type's call timeout.
    pub(super) fn timed_out(&self, call: &CommandCall) -> CommandError<A::Error> {
        let timeout = ExecutorError::Timeout {
            id: self.stream.aggregate_id().to_owned(),
            after: call.budget,
        };
        self.indeterminate(call, timeout)
    }
}
