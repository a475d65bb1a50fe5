//! Answers to a command id seen before: its original version and events, read back from the
//! store, so a retry learns what its first attempt did.

use std::sync::Arc;

use event_stores::{ReadQuery, RecordedEvent, StoreError};

use super::{AggregateActor, CommandCall};
use crate::aggregate::Aggregate;
use crate::error::{CommandError, ExecutorError};
use crate::hydrate::read_event;
use crate::outcome::Committed;

impl<A: Aggregate> AggregateActor<A> {
    /// The answer to a command id already applied in the window: its original version and
    /// events, read back from the store.
    pub(super) async fn duplicate(
        &mut self,
        call: &CommandCall,
        first: u64,
        last: u64,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let query = ReadQuery::after(first - 1)
            .up_to_version(last)
            .page_size(usize::try_from(last - first + 1).unwrap_or(usize::MAX));
        let read = self.context.events.read_stream(&self.stream, query);
        let stored = match tokio::time::timeout_at(call.deadline, read).await {
            Ok(Ok(stored)) => stored,
            // It is stored, but the answer cannot be read back now: the caller retries.
            Ok(Err(error)) => return Err(self.indeterminate(call, ExecutorError::Store(error))),
            Err(_) => {
                let after = self.context.settings.runtime.call_timeout;
                let id = self.stream.aggregate_id().to_owned();
                return Err(self.indeterminate(call, ExecutorError::Timeout { id, after }));
            }
        };
        self.committed_duplicate(call, &stored)
    }

    /// The answer to a command the store refused as already applied (older than the window).
    pub(super) async fn duplicate_from_store(
        &mut self,
        call: &CommandCall,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let read = self
            .context
            .events
            .read_command(&self.stream, call.command_id.as_uuid());
        match tokio::time::timeout_at(call.deadline, read).await {
            Ok(Ok(stored)) if !stored.is_empty() => self.committed_duplicate(call, &stored),
            Ok(Ok(_)) => Err(self.indeterminate(
                call,
                ExecutorError::Store(StoreError::Indeterminate {
                    message: "the store refused the command as applied but holds none of its \
                              events"
                        .into(),
                    source: None,
                }),
            )),
            Ok(Err(error)) => Err(self.indeterminate(call, ExecutorError::Store(error))),
            Err(_) => {
                let after = self.context.settings.runtime.call_timeout;
                let id = self.stream.aggregate_id().to_owned();
                Err(self.indeterminate(call, ExecutorError::Timeout { id, after }))
            }
        }
    }

    fn committed_duplicate(
        &self,
        call: &CommandCall,
        stored: &[RecordedEvent],
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let events = stored
            .iter()
            .map(read_event::<A>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CommandError::NotStored(ExecutorError::Activation(Arc::new(e))))?;
        tracing::debug!(stream = %self.stream, command_id = %call.command_id, "duplicate command answered with its original outcome");
        Ok(Committed {
            version: stored.last().map_or(self.version, |e| e.version),
            events,
            command_id: call.command_id,
            duplicate: true,
        })
    }
}
