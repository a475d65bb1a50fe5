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
use event_stores::StoreError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::codec::{self, CodecError};
use crate::command::CommandOptions;
use crate::error::{CommandError, Delivery, ExecutorError, Indeterminate};
use crate::outcome::{Committed, StateView};

/// How a forwarded call is answered when the receiver does not serve the id (any more): it
/// refused the call unread.
const NOT_OWNER: &str = "not_owner";

/// The kind of a call the transport could not deliver ([`TransportError::Unreachable`]).
const UNREACHABLE: &str = "unreachable";

/// The kind of a call sent whose answer did not come back ([`TransportError::Lost`]).
const LOST: &str = "lost";

/// The kind of a call sent whose answer came back unreadable, or not the answer asked for.
const BAD_ANSWER: &str = "bad_answer";

/// How far a forwarded call that failed with `kind` got. The kinds of what happened on the way
/// are given here, by the forwarding side, from what the transport reported; every other kind
/// is an owner's answer ([`not_stored`] never answers with one of the former).
pub(crate) fn delivery_of(kind: &str) -> Delivery {
    match kind {
        UNREACHABLE | NOT_OWNER => Delivery::NotDelivered,
        LOST | BAD_ANSWER => Delivery::MayHaveArrived,
        _ => Delivery::Answered,
    }
}

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
                Exchange::Unknown(remote_error(node, BAD_ANSWER, error.to_string(), true))
            }
        },
        Err(TransportError::Unreachable { reason, .. }) => {
            Exchange::Undelivered(remote_error(node, UNREACHABLE, reason, true))
        }
        Err(TransportError::Lost { reason, .. }) => {
            Exchange::Unknown(remote_error(node, LOST, reason, true))
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
                    cause: remote_error(node, BAD_ANSWER, e.to_string(), true),
                })
            }),
        Reply::Rejected(bytes) => match (codec.decode_error)(&bytes) {
            Ok(error) => Err(CommandError::Rejected(error)),
            // Not stored, since the owner rejected it; yet as a `bad_answer` it reads as
            // `answer_lost`, as this kind always has to callers that tell kinds apart.
            Err(e) => Err(CommandError::NotStored(remote_error(
                node,
                BAD_ANSWER,
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
                BAD_ANSWER,
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
                BAD_ANSWER,
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
        // Refused by the fence: this node lost the id's shard before it noticed, and the
        // database stored nothing. The sender looks the owner up again, as for an id not
        // served here.
        ExecutorError::NotLocal { .. } | ExecutorError::Store(StoreError::Fenced { .. }) => {
            NOT_OWNER
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use event_stores::{InvalidInput, StreamId};

    use super::*;
    use crate::command::CommandId;
    use crate::context::Context;

    struct Tally;

    #[derive(Debug, Serialize, Deserialize)]
    struct Added(u32);

    #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
    #[error("no")]
    struct No;

    impl Aggregate for Tally {
        const TYPE: &'static str = "tally";
        type Command = u32;
        type Event = Added;
        type State = u32;
        type Error = No;

        fn decide(_: &u32, command: &u32, _: &mut Context<'_, Self>) -> Result<Vec<Added>, No> {
            Ok(vec![Added(*command)])
        }

        fn apply(state: &mut u32, event: &Added) {
            *state += event.0;
        }
    }

    /// Answers every call with what it was given: a transport error or these bytes.
    struct Scripted(Mutex<Option<Result<Vec<u8>, TransportError>>>);

    impl Scripted {
        fn answering(reply: &Reply) -> Self {
            Self(Mutex::new(Some(Ok(codec::encode(reply).unwrap()))))
        }

        fn bytes(bytes: &[u8]) -> Self {
            Self(Mutex::new(Some(Ok(bytes.to_vec()))))
        }

        fn unreachable() -> Self {
            Self(Mutex::new(Some(Err(TransportError::Unreachable {
                node: "b".into(),
                reason: "connection refused".into(),
            }))))
        }

        fn lost() -> Self {
            Self(Mutex::new(Some(Err(TransportError::Lost {
                node: "b".into(),
                reason: "timeout".into(),
            }))))
        }
    }

    #[async_trait::async_trait]
    impl Transport for Scripted {
        async fn call(&self, _node: &str, _call: RemoteCall) -> Result<Vec<u8>, TransportError> {
            self.0.lock().unwrap().take().expect("one call only")
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(1);

    async fn snapshot_through(transport: Scripted) -> Forwarded<Result<u64, ExecutorError>> {
        forward_snapshot::<Tally>(&transport, "b", "t-1", TIMEOUT).await
    }

    async fn command_through(
        transport: Scripted,
    ) -> Forwarded<Result<Committed<Tally>, CommandError<No>>> {
        forward_execute::<Tally>(
            &transport,
            "b",
            &RemoteCodec::serde(),
            "t-1",
            &1,
            &CommandOptions::new().command_id(CommandId::from_key("k")),
            TIMEOUT,
        )
        .await
    }

    fn delivery_of_retry<T>(forwarded: Forwarded<T>) -> Option<Delivery> {
        match forwarded {
            Forwarded::Retry(error) => error.delivery(),
            Forwarded::Done(_) => panic!("expected a retry"),
        }
    }

    fn failed_snapshot(forwarded: Forwarded<Result<u64, ExecutorError>>) -> ExecutorError {
        match forwarded {
            Forwarded::Done(Err(error)) => error,
            Forwarded::Done(Ok(version)) => panic!("snapshotted at {version}"),
            Forwarded::Retry(error) => panic!("retried: {error}"),
        }
    }

    fn failed_command(
        forwarded: Forwarded<Result<Committed<Tally>, CommandError<No>>>,
    ) -> CommandError<No> {
        match forwarded {
            Forwarded::Done(Err(error)) => error,
            Forwarded::Done(Ok(committed)) => panic!("committed at {}", committed.version),
            Forwarded::Retry(error) => panic!("retried: {error}"),
        }
    }

    #[tokio::test]
    async fn a_call_the_transport_could_not_send_was_not_delivered_and_is_retried() {
        assert_eq!(
            delivery_of_retry(snapshot_through(Scripted::unreachable()).await),
            Some(Delivery::NotDelivered)
        );
        assert_eq!(
            delivery_of_retry(command_through(Scripted::unreachable()).await),
            Some(Delivery::NotDelivered)
        );
    }

    #[tokio::test]
    async fn a_call_refused_by_a_node_that_does_not_serve_the_id_was_not_delivered() {
        let not_owner = not_stored(&ExecutorError::NotLocal { id: "t-1".into() });
        assert_eq!(
            delivery_of_retry(snapshot_through(Scripted::answering(&not_owner)).await),
            Some(Delivery::NotDelivered)
        );
        assert_eq!(
            delivery_of_retry(command_through(Scripted::answering(&not_owner)).await),
            Some(Delivery::NotDelivered)
        );
    }

    #[tokio::test]
    async fn a_command_refused_by_the_fence_of_a_stale_owner_was_not_delivered_and_is_retried() {
        let fenced = not_stored(&ExecutorError::Store(StoreError::Fenced {
            stream: StreamId::new("tally", "t-1").unwrap(),
            shard: 3,
            epoch: 7,
        }));
        assert_eq!(
            delivery_of_retry(command_through(Scripted::answering(&fenced)).await),
            Some(Delivery::NotDelivered)
        );
    }

    #[tokio::test]
    async fn a_snapshot_request_whose_answer_was_lost_may_have_arrived() {
        let error = failed_snapshot(snapshot_through(Scripted::lost()).await);
        assert_eq!(error.delivery(), Some(Delivery::MayHaveArrived));
        assert!(error.answer_lost());
        assert!(error.is_retryable());
    }

    #[tokio::test]
    async fn an_unreadable_or_unexpected_answer_may_have_arrived() {
        let garbage = failed_snapshot(snapshot_through(Scripted::bytes(b"\xc1")).await);
        assert_eq!(garbage.delivery(), Some(Delivery::MayHaveArrived));
        let state = Reply::State {
            state: codec::encode(&7u32).unwrap(),
            version: 3,
        };
        let unexpected = failed_snapshot(snapshot_through(Scripted::answering(&state)).await);
        assert_eq!(unexpected.delivery(), Some(Delivery::MayHaveArrived));
        match failed_command(command_through(Scripted::answering(&state)).await) {
            CommandError::Indeterminate(i) => {
                assert_eq!(i.cause.delivery(), Some(Delivery::MayHaveArrived));
            }
            other => panic!("expected indeterminate, got {other}"),
        }
    }

    #[tokio::test]
    async fn a_command_whose_answer_was_lost_is_indeterminate_and_may_have_arrived() {
        match failed_command(command_through(Scripted::lost()).await) {
            CommandError::Indeterminate(i) => {
                assert_eq!(i.command_id, CommandId::from_key("k"));
                assert!(i.cause.answer_lost(), "{}", i.cause);
            }
            other => panic!("expected indeterminate, got {other}"),
        }
    }

    #[tokio::test]
    async fn an_error_the_owner_answered_was_delivered() {
        let overloaded = not_stored(&ExecutorError::Overloaded {
            id: "t-1".into(),
            capacity: 8,
        });
        let error = failed_snapshot(snapshot_through(Scripted::answering(&overloaded)).await);
        assert_eq!(error.delivery(), Some(Delivery::Answered));
        assert!(!error.answer_lost());
        match failed_command(command_through(Scripted::answering(&overloaded)).await) {
            CommandError::NotStored(e) => assert_eq!(e.delivery(), Some(Delivery::Answered)),
            other => panic!("expected not stored, got {other}"),
        }
        // The owner itself did not know the outcome: delivered, and indeterminate as it said.
        let unknown = Reply::Indeterminate {
            message: "the store connection broke".into(),
        };
        match failed_command(command_through(Scripted::answering(&unknown)).await) {
            CommandError::Indeterminate(i) => {
                assert_eq!(i.cause.delivery(), Some(Delivery::Answered));
            }
            other => panic!("expected indeterminate, got {other}"),
        }
    }

    #[test]
    fn an_owner_never_answers_with_a_kind_that_reads_as_a_failure_on_the_way() {
        let stream = StreamId::new("tally", "t-1").unwrap();
        let errors = [
            ExecutorError::NotFound {
                aggregate_type: "tally",
                id: "t-1".into(),
            },
            ExecutorError::Conflict {
                stream,
                retries: 3,
                expected: 1,
                actual: 2,
            },
            ExecutorError::Overloaded {
                id: "t-1".into(),
                capacity: 8,
            },
            ExecutorError::Expired {
                id: "t-1".into(),
                command_id: CommandId::new(),
            },
            ExecutorError::InvalidInput(InvalidInput::EmptyId {
                what: "aggregate id",
            }),
            ExecutorError::ShuttingDown,
            ExecutorError::Timeout {
                id: "t-1".into(),
                after: TIMEOUT,
            },
            // An owner that failed to reach a third node still answered: its kind is its own.
            ExecutorError::Remote {
                node: "c".into(),
                kind: LOST.into(),
                message: "timeout".into(),
                retryable: true,
            },
            ExecutorError::Remote {
                node: "c".into(),
                kind: UNREACHABLE.into(),
                message: "refused".into(),
                retryable: true,
            },
        ];
        for error in errors {
            let Reply::NotStored { kind, .. } = not_stored(&error) else {
                panic!("not_stored answers NotStored");
            };
            assert_eq!(delivery_of(&kind), Delivery::Answered, "{error} as {kind}");
        }
    }

    #[test]
    fn a_remote_error_is_exactly_one_of_not_delivered_lost_or_answered() {
        let remote = |kind: &str| ExecutorError::Remote {
            node: "b".into(),
            kind: kind.into(),
            message: "m".into(),
            retryable: true,
        };
        let three = |e: &ExecutorError| (e.not_delivered(), e.answer_lost(), e.owner_answered());
        for kind in [UNREACHABLE, NOT_OWNER] {
            assert_eq!(three(&remote(kind)), (true, false, false), "{kind}");
        }
        for kind in [LOST, BAD_ANSWER] {
            assert_eq!(three(&remote(kind)), (false, true, false), "{kind}");
        }
        for kind in [
            "conflict",
            "overloaded",
            "failed",
            "indeterminate",
            "rejected",
        ] {
            assert_eq!(three(&remote(kind)), (false, false, true), "{kind}");
        }
    }

    #[test]
    fn an_error_of_this_node_is_none_of_them() {
        let local = ExecutorError::Timeout {
            id: "t-1".into(),
            after: TIMEOUT,
        };
        assert_eq!(local.delivery(), None);
        assert!(!local.not_delivered() && !local.answer_lost() && !local.owner_answered());
    }
}
