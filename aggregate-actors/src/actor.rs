//! The aggregate actor: one live instance per aggregate id, hosted by the virtual-actor runtime.
//!
//! Lifecycle: [`activate`](AggregateActor::activate) rebuilds the state from the newest valid
//! snapshot plus the events after it; [`handle`](AggregateActor::handle) runs commands one at
//! a time; [`passivate`](AggregateActor::passivate) may leave a snapshot behind.

use std::sync::Arc;
use std::time::Instant;

use actor_runtime::{PassivationReason, Reply, VirtualActor};
use event_stores::{EventMetadata, EventStore, NewEvent, SnapshotStore, StoreError, StreamId};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::codec::{self, CodecError};
use crate::error::{ActivationError, CommandError, ExecutorError};
use crate::hydrate::{Hydrated, Target, hydrate};
use crate::metrics::{ActivationReport, AggregateMetrics};
use crate::settings::AggregateSettings;
use crate::snapshot_writer::{SnapshotJob, SnapshotWriter, WriteOutcome};
use crate::strategy::{ActivationCost, SnapshotContext};

/// What every actor of one aggregate type shares.
pub(crate) struct AggregateContext<A: Aggregate> {
    pub(crate) events: Arc<dyn EventStore>,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) settings: AggregateSettings<A>,
    pub(crate) writer: SnapshotWriter,
    pub(crate) metrics: Arc<AggregateMetrics>,
}

/// The outcome of a successful command.
pub struct Committed<A: Aggregate> {
    /// The stream version after the command.
    pub version: u64,
    /// The events the command stored (empty if it decided nothing needed to happen).
    pub events: Vec<A::Event>,
}

/// The current state of an aggregate, as its live actor holds it.
pub struct StateView<A: Aggregate> {
    /// The state.
    pub state: A::State,
    /// Its version.
    pub version: u64,
    /// How the actor holding it was activated.
    pub activation: ActivationReport,
}

impl<A: Aggregate> std::fmt::Debug for Committed<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed")
            .field("version", &self.version)
            .field("events", &self.events)
            .finish()
    }
}

impl<A: Aggregate> std::fmt::Debug for StateView<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("state", &self.state)
            .field("version", &self.version)
            .field("activation", &self.activation)
            .finish()
    }
}

impl<A: Aggregate> Clone for StateView<A> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            version: self.version,
            activation: self.activation.clone(),
        }
    }
}

type CommandReply<A> = Reply<Result<Committed<A>, CommandError<<A as Aggregate>::Error>>>;

/// Messages an aggregate actor answers.
pub(crate) enum AggregateMessage<A: Aggregate> {
    Execute {
        command: A::Command,
        metadata: EventMetadata,
        reply: CommandReply<A>,
    },
    State {
        reply: Reply<Result<StateView<A>, ExecutorError>>,
    },
    /// Answers with a receiver that resolves when the snapshot is written (None at version 0).
    SnapshotNow {
        reply: Reply<Result<Option<oneshot::Receiver<WriteOutcome>>, ExecutorError>>,
    },
}

/// One aggregate's live state and bookkeeping.
pub(crate) struct AggregateActor<A: Aggregate> {
    context: Arc<AggregateContext<A>>,
    stream: StreamId,
    state: A::State,
    version: u64,
    last_event_id: Option<Uuid>,
    /// True while the in-memory state may be ahead of the store (events applied, append not
    /// confirmed). The next command rebuilds the state first.
    stale: bool,
    activation: ActivationReport,
    last_snapshot_version: u64,
    last_snapshot_at: Instant,
    snapshotted_since_activation: bool,
}

#[async_trait::async_trait]
impl<A: Aggregate> VirtualActor for AggregateActor<A> {
    type Key = String;
    type Message = AggregateMessage<A>;
    type Context = AggregateContext<A>;
    type ActivationError = ActivationError;

    async fn activate(
        id: &String,
        context: &Arc<AggregateContext<A>>,
    ) -> Result<Self, ActivationError> {
        let stream = StreamId::new(A::TYPE, id)?;
        let span = tracing::info_span!("activation", aggregate = A::TYPE, %id);
        let hydrated = load::<A>(context, &stream).instrument(span).await?;
        let activation = hydrated.report();
        context.metrics.activated(&activation);
        tracing::debug!(%stream, ?activation, "activated");
        Ok(Self {
            context: Arc::clone(context),
            last_snapshot_version: hydrated.snapshot.as_ref().map_or(0, |s| s.version),
            state: hydrated.state,
            version: hydrated.version,
            last_event_id: hydrated.last_event_id,
            stale: false,
            activation,
            last_snapshot_at: Instant::now(),
            snapshotted_since_activation: false,
            stream,
        })
    }

    async fn handle(&mut self, message: AggregateMessage<A>) {
        match message {
            AggregateMessage::Execute {
                command,
                metadata,
                reply,
            } => {
                let span =
                    tracing::debug_span!("command", stream = %self.stream, version = self.version);
                let outcome = self.execute(&command, metadata).instrument(span).await;
                let metrics = &self.context.metrics;
                match &outcome {
                    Ok(_) => metrics.command_succeeded(),
                    Err(CommandError::Rejected(_)) => metrics.command_rejected(),
                    Err(CommandError::Executor(_)) => metrics.command_failed(),
                }
                reply.send(outcome);
            }
            AggregateMessage::State { reply } => {
                let view = self.catch_up().await.map(|()| StateView {
                    state: self.state.clone(),
                    version: self.version,
                    activation: self.activation.clone(),
                });
                reply.send(view);
            }
            AggregateMessage::SnapshotNow { reply } => {
                let written = self.catch_up().await.map(|()| {
                    let (done, wait) = oneshot::channel();
                    self.take_snapshot(vec![done]).then_some(wait)
                });
                reply.send(written);
            }
        }
    }

    async fn passivate(&mut self, reason: PassivationReason) {
        let behind = self.version > self.last_snapshot_version;
        if self.context.settings.snapshot_on_passivation && behind && !self.stale {
            tracing::debug!(stream = %self.stream, ?reason, version = self.version, "snapshot on passivation");
            self.take_snapshot(Vec::new());
        }
    }
}

impl<A: Aggregate> AggregateActor<A> {
    /// decide → encode → apply → append (expected version) → snapshot check → reply.
    async fn execute(
        &mut self,
        command: &A::Command,
        metadata: EventMetadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let mut retries = 0;
        loop {
            self.catch_up().await?;
            let events = A::decide(&self.state, command).map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Committed {
                    version: self.version,
                    events,
                });
            }
            let batch = encode_events::<A>(&events, metadata)?;
            let last_event_id = batch.last().map(|e| e.event_id);
            // Apply before appending: if user code panics here the actor stops with nothing
            // stored. Until the append is confirmed the state is marked stale.
            self.stale = true;
            for event in &events {
                A::apply(&mut self.state, event);
            }
            let append_span =
                tracing::debug_span!("append", expected = self.version, events = events.len());
            let appended = self
                .context
                .events
                .append(&self.stream, self.version, batch)
                .instrument(append_span)
                .await;
            match appended {
                Ok(receipt) => {
                    self.stale = false;
                    self.version = receipt.last_version;
                    self.last_event_id = last_event_id;
                    self.consider_snapshot(&events);
                    return Ok(Committed {
                        version: self.version,
                        events,
                    });
                }
                Err(StoreError::VersionConflict {
                    stream,
                    expected,
                    actual,
                }) => {
                    self.context.metrics.conflict();
                    if retries >= self.context.settings.max_conflict_retries {
                        return Err(ExecutorError::Conflict {
                            stream,
                            retries,
                            expected,
                            actual,
                        }
                        .into());
                    }
                    retries += 1;
                    tracing::debug!(%stream, expected, actual, retries, "version conflict; re-deciding on fresh state");
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Rebuilds the state from the stores if it may have run ahead of them.
    async fn catch_up(&mut self) -> Result<(), ExecutorError> {
        if !self.stale {
            return Ok(());
        }
        let hydrated = load::<A>(&self.context, &self.stream)
            .await
            .map_err(|e| ExecutorError::Activation(Arc::new(e)))?;
        if let Some(snapshot) = &hydrated.snapshot {
            self.last_snapshot_version = self.last_snapshot_version.max(snapshot.version);
        }
        self.state = hydrated.state;
        self.version = hydrated.version;
        self.last_event_id = hydrated.last_event_id;
        self.stale = false;
        Ok(())
    }

    fn consider_snapshot(&mut self, new_events: &[A::Event]) {
        let context = SnapshotContext::<A> {
            state: &self.state,
            new_events,
            version: self.version,
            last_snapshot_version: self.last_snapshot_version,
            since_last_snapshot: self.last_snapshot_at.elapsed(),
            activation: ActivationCost {
                events_replayed: self.activation.events_replayed,
                elapsed: self.activation.elapsed,
            },
            snapshotted_since_activation: self.snapshotted_since_activation,
        };
        if self.context.settings.strategy.should_snapshot(&context) {
            self.take_snapshot(Vec::new());
        }
    }

    /// Encodes the state here (so no copy of it is needed) and hands the bytes to the
    /// background writer. Returns false when there is nothing to snapshot or encoding failed.
    fn take_snapshot(&mut self, waiters: Vec<oneshot::Sender<WriteOutcome>>) -> bool {
        let Some(last_event_id) = self.last_event_id else {
            return false;
        };
        let encoded = match codec::encode(&self.state) {
            Ok(encoded) => encoded,
            Err(error) => {
                self.context.metrics.snapshot_failed();
                tracing::warn!(stream = %self.stream, %error, "state could not be encoded for a snapshot");
                return false;
            }
        };
        let settings = &self.context.settings;
        self.context.writer.submit(SnapshotJob {
            stream: self.stream.clone(),
            version: self.version,
            last_event_id,
            state_schema_version: A::STATE_SCHEMA_VERSION,
            encoded,
            compression: settings.compression,
            retention: settings.retention,
            metrics: Arc::clone(&self.context.metrics),
            waiters,
        });
        self.last_snapshot_version = self.version;
        self.last_snapshot_at = Instant::now();
        self.snapshotted_since_activation = true;
        true
    }
}

async fn load<A: Aggregate>(
    context: &AggregateContext<A>,
    stream: &StreamId,
) -> Result<Hydrated<A>, ActivationError> {
    hydrate::<A>(
        &*context.events,
        &*context.snapshots,
        stream,
        Target::Latest,
        context.settings.replay_page_size,
        &context.metrics,
    )
    .await
}

/// Encodes a command's events for the store, each with a fresh UUID v7.
pub(crate) fn encode_events<A: Aggregate>(
    events: &[A::Event],
    metadata: EventMetadata,
) -> Result<Vec<NewEvent>, CodecError> {
    events
        .iter()
        .map(|event| {
            Ok(NewEvent {
                event_id: Uuid::now_v7(),
                event_type: A::event_type(event).into_owned(),
                schema_version: A::EVENT_SCHEMA_VERSION,
                payload: codec::encode(event)?.into(),
                metadata,
            })
        })
        .collect()
}
