//! [`ErrorKind`]: every failure of the executor in one flat list, so a caller can match on what
//! to do without walking nested error enums (the way `std::io::Error::kind` works).

use event_stores::StoreError;

use crate::error::{ActivationError, CommandError, ExecutorError};

/// What kind of failure an error is, and so what a caller does about it.
///
/// ```
/// use aggregate_actors::{CommandError, ErrorKind};
/// # fn handle<E: std::error::Error>(error: CommandError<E>) -> u16 {
/// match error.kind() {
///     ErrorKind::Rejected => 422,
///     ErrorKind::InvalidInput => 400,
///     ErrorKind::NotFound => 404,
///     ErrorKind::Conflict => 409,
///     ErrorKind::Unavailable => 503,
///     ErrorKind::Indeterminate => 504, // retry with the same command id
///     _ => 500,
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The aggregate's `decide` said no. Nothing was stored.
    Rejected,
    /// The request was malformed (an empty or oversized id, an oversized payload, a type that
    /// is not registered, a version the stream has not reached). Nothing was stored; the same
    /// request fails again.
    InvalidInput,
    /// The aggregate has no events.
    NotFound,
    /// Other writers kept winning the race for the stream. Nothing was stored; retrying may
    /// succeed.
    Conflict,
    /// The store, the node or the aggregate could not take the call now (unreachable store,
    /// full mailbox, expired deadline, shutdown, owner unreachable). Nothing was stored;
    /// retrying later may succeed.
    Unavailable,
    /// The command may or may not have been stored: retry it with the same command id.
    Indeterminate,
    /// Stored data cannot be read (a corrupt event, no upcaster for its schema): an operator
    /// has to look.
    Corrupt,
    /// Anything else: a codec or backend failure that retrying will not fix.
    Internal,
}

impl ErrorKind {
    /// Whether nothing was stored for a command that failed this way.
    pub fn stored_nothing(self) -> bool {
        self != ErrorKind::Indeterminate
    }
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CommandError::Rejected(_) => ErrorKind::Rejected,
            CommandError::NotStored(error) => error.kind(),
            CommandError::Indeterminate(_) => ErrorKind::Indeterminate,
        }
    }
}

impl ExecutorError {
    /// What kind of failure this is. For a command, an outcome that may have been stored is a
    /// [`CommandError::Indeterminate`] and so [`ErrorKind::Indeterminate`]; on its own a
    /// timeout is [`ErrorKind::Unavailable`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecutorError::UnknownAggregateType(_)
            | ExecutorError::TypeNotServed { .. }
            | ExecutorError::InvalidInput(_)
            | ExecutorError::VersionNotReached { .. }
            | ExecutorError::RemindersOff { .. } => ErrorKind::InvalidInput,
            ExecutorError::NotFound { .. } | ExecutorError::NotArchived { .. } => {
                ErrorKind::NotFound
            }
            ExecutorError::NoArchive { .. } => ErrorKind::InvalidInput,
            ExecutorError::CannotRestore { .. } => ErrorKind::Corrupt,
            ExecutorError::Conflict { .. } => ErrorKind::Conflict,
            ExecutorError::Store(error) => store_kind(error),
            ExecutorError::Codec(_) => ErrorKind::Internal,
            ExecutorError::Activation(error) => match &**error {
                ActivationError::Store { source, .. } => store_kind(source),
                ActivationError::CorruptEvent { .. } => ErrorKind::Corrupt,
                ActivationError::InvalidId(_) => ErrorKind::InvalidInput,
            },
            ExecutorError::Overloaded { .. }
            | ExecutorError::Timeout { .. }
            | ExecutorError::ActorStopped { .. }
            | ExecutorError::Abandoned { .. }
            | ExecutorError::Expired { .. }
            | ExecutorError::ShuttingDown
            | ExecutorError::NotLocal { .. } => ErrorKind::Unavailable,
            ExecutorError::Remote {
                kind, retryable, ..
            } => match kind.as_str() {
                "not_found" => ErrorKind::NotFound,
                "conflict" => ErrorKind::Conflict,
                "invalid_input" | "bad_request" | "unknown_aggregate_type" => {
                    ErrorKind::InvalidInput
                }
                _ if *retryable => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
        }
    }
}

fn store_kind(error: &StoreError) -> ErrorKind {
    match error {
        StoreError::VersionConflict { .. } => ErrorKind::Conflict,
        StoreError::InvalidInput(_) => ErrorKind::InvalidInput,
        StoreError::Indeterminate { .. } => ErrorKind::Indeterminate,
        StoreError::Corrupt(_) => ErrorKind::Corrupt,
        other if other.is_retryable() => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use event_stores::{InvalidInput, StreamId};

    use super::*;
    use crate::command::CommandId;
    use crate::error::Indeterminate;

    #[derive(Debug, thiserror::Error)]
    #[error("no")]
    struct No;

    fn stream() -> StreamId {
        StreamId::new("t", "1").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_failure_has_the_kind_a_caller_acts_on() {
        let cases: Vec<(CommandError<No>, ErrorKind)> = vec![
            (CommandError::Rejected(No), ErrorKind::Rejected),
            (
                CommandError::NotStored(ExecutorError::InvalidInput(InvalidInput::EmptyId {
                    what: "aggregate id",
                })),
                ErrorKind::InvalidInput,
            ),
            (
                CommandError::NotStored(ExecutorError::Conflict {
                    stream: stream(),
                    retries: 3,
                    expected: 1,
                    actual: 2,
                }),
                ErrorKind::Conflict,
            ),
            (
                CommandError::NotStored(ExecutorError::Store(StoreError::Unavailable {
                    message: "down".into(),
                    source: None,
                })),
                ErrorKind::Unavailable,
            ),
            (
                CommandError::NotStored(ExecutorError::Activation(Arc::new(
                    ActivationError::Store {
                        stream: stream(),
                        source: StoreError::Corrupt("bad row".into()),
                    },
                ))),
                ErrorKind::Corrupt,
            ),
            (
                CommandError::Indeterminate(Indeterminate {
                    id: "1".into(),
                    command_id: CommandId::new(),
                    cause: ExecutorError::Timeout {
                        id: "1".into(),
                        after: Duration::from_secs(1),
                    },
                }),
                ErrorKind::Indeterminate,
            ),
            (
                CommandError::NotStored(ExecutorError::Remote {
                    node: "b".into(),
                    kind: "unreachable".into(),
                    message: "refused".into(),
                    retryable: true,
                }),
                ErrorKind::Unavailable,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(
                error.kind().stored_nothing(),
                error.stored_nothing(),
                "{error}"
            );
        }
    }
}
