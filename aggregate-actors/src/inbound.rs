//! The answering side of calls forwarded from other nodes: each served type's handler runs the
//! call on this node's actor (never forwarding further) and encodes the outcome; the executor's
//! [`Inbound`] hands each call to its type's handler. Above the executor; the wire format and
//! the forwarding side are in [`crate::remote`], beneath it.

use std::marker::PhantomData;
use std::sync::Arc;

use actor_runtime::{Inbound, RemoteCall};

use crate::aggregate::Aggregate;
use crate::codec;
use crate::command::CommandOptions;
use crate::executor::Executor;
use crate::remote::{RemoteHandler, Reply, Request, command_reply, not_stored};

impl Executor {
    /// The answering side for calls other nodes forward here: hand it to the transport's
    /// server (e.g. `cluster`'s HTTP/2 server).
    pub fn inbound(&self) -> Arc<dyn Inbound> {
        Arc::new(ExecutorInbound {
            executor: self.clone(),
        })
    }
}

/// The [`RemoteHandler`] of aggregate type `A`.
pub(crate) struct RemoteType<A>(PhantomData<fn() -> A>);

impl<A> RemoteType<A> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

#[async_trait::async_trait]
impl<A: Aggregate> RemoteHandler<Executor> for RemoteType<A> {
    async fn handle(&self, executor: &Executor, call: RemoteCall) -> Reply {
        let bad_request = |message: String| Reply::NotStored {
            kind: "bad_request".into(),
            message,
            retryable: false,
        };
        let request: Request = match codec::decode(&call.payload) {
            Ok(request) => request,
            Err(error) => return bad_request(error.to_string()),
        };
        match request {
            Request::Execute {
                command,
                command_id,
                correlation_id,
                causation_id,
                trace_parent,
            } => {
                let Some(codec) = executor.remote_codec::<A>() else {
                    return bad_request(format!("{} is not served to other nodes", A::TYPE));
                };
                let command = match (codec.decode_command)(&command) {
                    Ok(command) => command,
                    Err(error) => return bad_request(error.to_string()),
                };
                let options = CommandOptions::new()
                    .command_id(command_id.into())
                    .timeout(call.timeout)
                    .metadata(event_stores::EventMetadata {
                        correlation_id,
                        causation_id,
                        trace_parent,
                    });
                let outcome = executor
                    .execute_here::<A>(&call.key, command, options)
                    .await;
                command_reply(codec, outcome)
            }
            Request::State => match executor.state_here::<A>(&call.key).await {
                Ok(view) => match codec::encode(&view.state) {
                    Ok(state) => Reply::State {
                        state,
                        version: view.version,
                    },
                    Err(error) => not_stored(&error.into()),
                },
                Err(error) => not_stored(&error),
            },
            Request::SnapshotNow => match executor.snapshot_here::<A>(&call.key).await {
                Ok(version) => Reply::Snapshotted { version },
                Err(error) => not_stored(&error),
            },
        }
    }
}

/// The executor as the answering side of a [`Transport`]: give it to the transport's server.
pub(crate) struct ExecutorInbound {
    pub(crate) executor: Executor,
}

#[async_trait::async_trait]
impl Inbound for ExecutorInbound {
    async fn handle(&self, call: RemoteCall) -> Vec<u8> {
        let reply = match self.executor.remote_handler(&call.directory) {
            Some(handler) => handler.handle(&self.executor, call).await,
            None => Reply::NotStored {
                kind: "unknown_aggregate_type".into(),
                message: format!("aggregate type {:?} is not served here", call.directory),
                retryable: false,
            },
        };
        // A reply always encodes (plain enums of bytes, strings and numbers); an empty answer
        // would read as unreadable, which the caller treats as indeterminate.
        codec::encode(&reply).unwrap_or_default()
    }
}
