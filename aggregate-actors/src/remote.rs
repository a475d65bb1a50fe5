//! Commands, state reads and snapshots on demand for aggregates served by another node: the wire
//! format and the forwarding side (the answering side is [`crate::inbound`]).
//!
//! The executor asks its placement where an id is served. Here: the local actor. On another
//! node: the call is encoded (MessagePack: the command, its id, its metadata; the time left
//! travels with the transport's call) and sent through the [`Transport`]; the owner runs it on
//! its local actor, never forwarding further, and answers with the outcome, or "not owner"
//! when its shards moved meanwhile (the caller then looks the route up again and retries
//! within the deadline). Because the command id travels with every attempt, a retry that lands
//! on a new owner after a takeover is answered as a duplicate, never applied twice.
//!
//! Only types registered with [`ExecutorBuilder::register_remote`](crate::ExecutorBuilder::register_remote)
//! are forwarded: their commands and domain errors must be `Serialize + DeserializeOwned`.

use std::marker::PhantomData;
use std::time::Duration;

use actor_runtime::{RemoteCall, Transport, TransportError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::codec::{self, CodecError};
use crate::command::CommandOptions;
use crate::error::{CommandError, ExecutorError, Indeterminate};
use crate::outcome::{Committed, StateView};

/// How a forwarded call is answered when the receiver does not serve the id (any more).
const NOT_OWNER: &str = "not_owner";

/// What travels to the owner.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Execute {
        #[serde(with = "serde_bytes")]
        command: Vec<u8>,
        command_id: Uuid,
        correlation_id: Option<Uuid>,
        causation_id: Option<Uuid>,
        /// Absent from nodes built before trace context was carried.
        #[serde(default)]
        trace_parent: Option<event_stores::TraceParent>,
    },
    State,
    SnapshotNow,
}

/// What comes back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Committed {
        version: u64,
        events: Vec<serde_bytes::ByteBuf>,
        duplicate: bool,
    },
    Rejected(#[serde(with = "serde_bytes")] Vec<u8>),
    NotStored {
        kind: String,
        message: String,
        retryable: bool,
    },
    Indeterminate {
        message: String,
    },
    State {
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        version: u64,
    },
    Snapshotted {
        version: u64,
    },
}

/// Encodes and decodes one aggregate type's commands and domain errors for the wire.
pub(crate) struct RemoteCodec<A: Aggregate> {
    pub(crate) encode_command: fn(&A::Command) -> Result<Vec<u8>, CodecError>,
    pub(crate) decode_command: fn(&[u8]) -> Result<A::Command, CodecError>,
    pub(crate) encode_error: fn(&A::Error) -> Result<Vec<u8>, CodecError>,
    pub(crate) decode_error: fn(&[u8]) -> Result<A::Error, CodecError>,
    _type: PhantomData<fn() -> A>,
}

impl<A: Aggregate> RemoteCodec<A>
where
    A::Command: Serialize + DeserializeOwned,
    A::Error: Serialize + DeserializeOwned,
{
    /// MessagePack with named fields, like events and snapshots.
    pub(crate) fn serde() -> Self {
        Self {
            encode_command: |c| codec::encode(c),
            decode_command: |b| codec::decode(b),
            encode_error: |e| codec::encode(e),
            decode_error: |b| codec::decode(b),
            _type: PhantomData,
        }
    }
}

/// The outcome of one forwarding attempt.
pub(crate) enum Forwarded<T> {
    /// The owner answered (or the answer is known to be lost): final.
    Done(T),
    /// Not delivered, or the receiver does not serve the id: look the route up again.
    Retry(ExecutorError),
}

fn remote_error(node: &str, kind: &str, message: String, retryable: bool) -> ExecutorError {
    ExecutorError::Remote {
        node: node.to_owned(),
        kind: kind.to_owned(),
        message,
        retryable,
    }
}

/// What one exchange with the owner gave.
enum Exchange {
    /// Its decoded reply.
    Reply(Reply),
    /// Not delivered: safe to try again.
    Undelivered(ExecutorError),
    /// Delivered, but the answer was lost or unreadable: what happened there is unknown.
    Unknown(ExecutorError),
}

/// Sends one request about `id` of type `A` to `node` and decodes the reply.
async fn exchange<A: Aggregate>(
    transport: &dyn Transport,
    node: &str,
    id: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Exchange {
    let call = RemoteCall {
        directory: A::TYPE.to_owned(),
        key: id.to_owned(),
        payload,
        timeout,
        hops: 1,
    };
    match transport.call(node, call).await {
        Ok(answer) => match codec::decode::<Reply>(&answer) {
            Ok(reply) => Exchange::Reply(reply),
            Err(error) => {
                Exchange::Unknown(remote_error(node, "bad_answer", error.to_string(), true))
            }
        },
        Err(TransportError::Unreachable { reason, .. }) => {
            Exchange::Undelivered(remote_error(node, "unreachable", reason, true))
        }
        Err(TransportError::Lost { reason, .. }) => {
            Exchange::Unknown(remote_error(node, "lost", reason, true))
        }
    }
}

/// Sends a command to the node at `node` and maps its answer.
pub(crate) async fn forward_execute<A: Aggregate>(
    transport: &dyn Transport,
    node: &str,
    codec: &RemoteCodec<A>,
    id: &str,
    command: &A::Command,
    options: &CommandOptions,
    timeout: Duration,
) -> Forwarded<Result<Committed<A>, CommandError<A::Error>>> {
    let command_id = options.command_id.unwrap_or_default();
    let metadata = options.metadata;
    let request = (codec.encode_command)(command).and_then(|command| {
        codec::encode(&Request::Execute {
            command,
            command_id: command_id.as_uuid(),
            correlation_id: metadata.correlation_id,
            causation_id: metadata.causation_id,
            trace_parent: metadata.trace_parent,
        })
    });
    let payload = match request {
        Ok(payload) => payload,
        Err(error) => return Forwarded::Done(Err(CommandError::NotStored(error.into()))),
    };
    let indeterminate = |cause: ExecutorError| {
        Forwarded::Done(Err(CommandError::Indeterminate(Indeterminate {
            id: id.to_owned(),
            command_id,
            cause,
        })))
    };
    let reply = match exchange::<A>(transport, node, id, payload, timeout).await {
        Exchange::Reply(reply) => reply,
        Exchange::Undelivered(error) => return Forwarded::Retry(error),
        Exchange::Unknown(error) => return indeterminate(error),
    };
    let outcome = match reply {
        Reply::Committed {
            version,
            events,
            duplicate,
        } => events
            .iter()
            .map(|e| codec::decode::<A::Event>(e))
            .collect::<Result<Vec<_>, _>>()
            .map(|events| Committed {
                version,
                events,
                command_id,
                duplicate,
            })
            // Stored, but the events cannot be read here: the caller retries for them.
            .map_err(|e| {
                CommandError::Indeterminate(Indeterminate {
                    id: id.to_owned(),
                    command_id,
                    cause: remote_error(node, "bad_answer", e.to_string(), true),
                })
            }),
        Reply::Rejected(bytes) => match (codec.decode_error)(&bytes) {
            Ok(error) => Err(CommandError::Rejected(error)),
            Err(e) => Err(CommandError::NotStored(remote_error(
                node,
                "bad_answer",
                format!("a rejection that does not decode: {e}"),
                false,
            ))),
        },
        Reply::NotStored { kind, .. } if kind == NOT_OWNER => {
            return Forwarded::Retry(remote_error(node, NOT_OWNER, "routes moved".into(), true));
        }
        Reply::NotStored {
            kind,
            message,
            retryable,
        } => Err(CommandError::NotStored(remote_error(
            node, &kind, message, retryable,
        ))),
        Reply::Indeterminate { message } => {
            return indeterminate(remote_error(node, "indeterminate", message, true));
        }
        // Delivered, but answered with something else: what happened there is unknown.
        Reply::State { .. } | Reply::Snapshotted { .. } => {
            return indeterminate(remote_error(
                node,
                "bad_answer",
                "a state where a command outcome was expected".into(),
                true,
            ));
        }
    };
    Forwarded::Done(outcome)
}

/// Asks the node at `node` for the state of `id`.
pub(crate) async fn forward_state<A: Aggregate>(
    transport: &dyn Transport,
    node: &str,
    id: &str,
    timeout: Duration,
) -> Forwarded<Result<StateView<A>, ExecutorError>> {
    forward_query::<A, _>(
        transport,
        node,
        id,
        &Request::State,
        timeout,
        |reply| match reply {
            Reply::State { state, version } => Some(
                codec::decode::<A::State>(&state)
                    .map(|state| StateView {
                        state,
                        version,
                        activation: Default::default(),
                    })
                    .map_err(ExecutorError::from),
            ),
            _ => None,
        },
    )
    .await
}

/// Asks the node at `node` to snapshot `id` now.
pub(crate) async fn forward_snapshot<A: Aggregate>(
    transport: &dyn Transport,
    node: &str,
    id: &str,
    timeout: Duration,
) -> Forwarded<Result<u64, ExecutorError>> {
    forward_query::<A, _>(
        transport,
        node,
        id,
        &Request::SnapshotNow,
        timeout,
        |reply| match reply {
            Reply::Snapshotted { version } => Some(Ok(version)),
            _ => None,
        },
    )
    .await
}

/// Sends a request that changes no events (a state read, a snapshot) and reads its answer
/// with `read` (`None`: not the answer expected). A lost answer is final: nothing to undo.
async fn forward_query<A: Aggregate, T>(
    transport: &dyn Transport,
    node: &str,
    id: &str,
    request: &Request,
    timeout: Duration,
    read: impl FnOnce(Reply) -> Option<Result<T, ExecutorError>>,
) -> Forwarded<Result<T, ExecutorError>> {
    let payload = match codec::encode(request) {
        Ok(payload) => payload,
        Err(error) => return Forwarded::Done(Err(error.into())),
    };
    let reply = match exchange::<A>(transport, node, id, payload, timeout).await {
        Exchange::Reply(reply) => reply,
        Exchange::Undelivered(error) => return Forwarded::Retry(error),
        Exchange::Unknown(error) => return Forwarded::Done(Err(error)),
    };
    let outcome = match reply {
        Reply::NotStored { kind, .. } if kind == NOT_OWNER => {
            return Forwarded::Retry(remote_error(node, NOT_OWNER, "routes moved".into(), true));
        }
        Reply::NotStored {
            kind,
            message,
            retryable,
        } => match kind.as_str() {
            "not_found" => Err(ExecutorError::NotFound {
                aggregate_type: A::TYPE,
                id: id.to_owned(),
            }),
            _ => Err(remote_error(node, &kind, message, retryable)),
        },
        reply => read(reply).unwrap_or_else(|| {
            Err(remote_error(
                node,
                "bad_answer",
                "not the answer asked for".into(),
                false,
            ))
        }),
    };
    Forwarded::Done(outcome)
}

/// The answer for an executor error on the owner's side.
pub(crate) fn not_stored(error: &ExecutorError) -> Reply {
    let kind = match error {
        ExecutorError::NotLocal { .. } => NOT_OWNER,
        ExecutorError::NotFound { .. } => "not_found",
        ExecutorError::Conflict { .. } => "conflict",
        ExecutorError::Overloaded { .. } => "overloaded",
        ExecutorError::Expired { .. } => "expired",
        ExecutorError::InvalidInput(_) => "invalid_input",
        ExecutorError::ShuttingDown => "shutting_down",
        _ => "failed",
    };
    Reply::NotStored {
        kind: kind.to_owned(),
        message: error.to_string(),
        retryable: error.is_retryable(),
    }
}

/// The answer for a command outcome on the owner's side.
pub(crate) fn command_reply<A: Aggregate>(
    codec: &RemoteCodec<A>,
    outcome: Result<Committed<A>, CommandError<A::Error>>,
) -> Reply {
    match outcome {
        Ok(committed) => {
            let events = committed
                .events
                .iter()
                .map(|e| codec::encode(e).map(serde_bytes::ByteBuf::from))
                .collect::<Result<Vec<_>, _>>();
            match events {
                Ok(events) => Reply::Committed {
                    version: committed.version,
                    events,
                    duplicate: committed.duplicate,
                },
                // Stored, but unsendable: the caller learns the outcome by retrying.
                Err(error) => Reply::Indeterminate {
                    message: format!("stored, but the events could not be encoded: {error}"),
                },
            }
        }
        Err(CommandError::Rejected(error)) => match (codec.encode_error)(&error) {
            Ok(bytes) => Reply::Rejected(bytes),
            Err(e) => Reply::NotStored {
                kind: "rejected".into(),
                message: format!("{error} (the rejection could not be encoded: {e})"),
                retryable: false,
            },
        },
        Err(CommandError::NotStored(error)) => not_stored(&error),
        Err(CommandError::Indeterminate(indeterminate)) => Reply::Indeterminate {
            message: indeterminate.to_string(),
        },
    }
}

/// Answers forwarded calls for one aggregate type on the owner's side. Generic over the
/// executor that runs them, so that this module, beneath the executor, need not name it
/// (the handlers themselves are in [`crate::inbound`]).
#[async_trait::async_trait]
pub(crate) trait RemoteHandler<E: Sync>: Send + Sync {
    async fn handle(&self, executor: &E, call: RemoteCall) -> Reply;
}
