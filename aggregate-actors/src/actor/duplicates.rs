//! Answers to a command id seen before: its original version and events, read back from the
//! store, so a retry learns what its first attempt did.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use event_stores::{ReadQuery, RecordedEvent, StoreError};

use super::{AggregateActor, CommandCall, deadline};
use crate::aggregate::Aggregate;
use crate::codec::CodecError;
use crate::error::{ActivationError, CommandError, ExecutorError};
use crate::hydrate::read_event;
use crate::outcome::Committed;
use crate::upcast::UpcastError;

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
            Err(_) => return Err(self.timed_out(call)),
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
            Err(_) => Err(self.timed_out(call)),
        }
    }

    /// Whether the store holds events this actor has not seen (another executor appended
    /// meanwhile), found with one read of the stream's version. If so, the state is marked
    /// stale: the next round catches up and looks in the window again, since the command may
    /// be a retry whose first attempt is among those events.
    pub(super) async fn behind_store(
        &mut self,
        call: &CommandCall,
    ) -> Result<bool, CommandError<A::Error>> {
        let read = self.context.events.stream_version(&self.stream);
        let stored = match deadline::by(call.deadline, read).await {
            Ok(Ok(version)) => version,
            Ok(Err(error)) => return Err(CommandError::NotStored(error.into())),
            Err(_) => return Err(self.expired(call.command_id)),
        };
        if stored == self.version {
            return Ok(false);
        }
        tracing::debug!(stream = %self.stream, version = self.version, stored, "behind the store; catching up before answering");
        self.stale = true;
        Ok(true)
    }

    /// After a final version conflict: the original outcome if the write that won was this
    /// command's first attempt (a retry on an actor behind the store), found in the window once
    /// caught up. `None` when it was not, or when the stream cannot be read now.
    pub(super) async fn stored_meanwhile(
        &mut self,
        call: &CommandCall,
    ) -> Option<Result<Committed<A>, CommandError<A::Error>>> {
        if let Err(error) = self.catch_up_by(call).await {
            tracing::debug!(stream = %self.stream, command_id = %call.command_id, %error, "cannot catch up after a conflict");
            return None;
        }
        let (first, last) = self.recent.get(call.command_id.as_uuid())?;
        Some(self.duplicate(call, first, last).await)
    }

    /// The original outcome from its stored events. The command is known to be stored, so
    /// events that cannot be read back make the answer indeterminate, never "not stored".
    fn committed_duplicate(
        &self,
        call: &CommandCall,
        stored: &[RecordedEvent],
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let events = stored
            .iter()
            .map(read_stored::<A>)
            .collect::<Result<Vec<_>, _>>()
            // Stored, but the events cannot be read here: the caller retries for them.
            .map_err(|e| self.indeterminate(call, ExecutorError::Activation(Arc::new(e))))?;
        tracing::debug!(stream = %self.stream, command_id = %call.command_id, "duplicate command answered with its original outcome");
        Ok(Committed {
            version: stored.last().map_or(self.version, |e| e.version),
            events,
            command_id: call.command_id,
            duplicate: true,
        })
    }
}

/// [`read_event`], whose upcasters and `Deserialize` are user code, with a panic in them caught:
/// unwinding would drop the reply, which the caller takes for "stopped, nothing stored", of a
/// command that is stored. Nothing of the actor's is touched while decoding, so it goes on.
fn read_stored<A: Aggregate>(event: &RecordedEvent) -> Result<A::Event, ActivationError> {
    catch_unwind(AssertUnwindSafe(|| read_event::<A>(event))).unwrap_or_else(|panic| {
        let message = panic_message(&*panic);
        tracing::error!(stream = %event.stream, version = event.version, %message, "decoding a stored event panicked");
        Err(ActivationError::CorruptEvent {
            stream: event.stream.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            source: UpcastError::Codec(CodecError::Decode(format!("it panicked: {message}"))),
        })
    })
}

/// What a panic said, when it said it with a string (as `panic!` does).
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}
