//! The aggregate actor: one live instance per aggregate id, hosted by the virtual-actor runtime.
//!
//! Lifecycle: [`activate`](AggregateActor::activate) rebuilds the state from the newest valid
//! snapshot plus the events after it; [`handle`](AggregateActor::handle) runs commands one at
//! a time; [`passivate`](AggregateActor::passivate) may leave a snapshot behind.

use std::sync::Arc;
use std::time::Instant;

use actor_runtime::{PassivationReason, Reply, VirtualActor};
use event_stores::{EventStore, SnapshotStore, StoreError, StoredReminder, StreamId};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::codec::encode_events;
use crate::context::Context;
use crate::dedup::RecentCommands;
use crate::error::{ActivationError, CommandError, ExecutorError};
use crate::hydrate::Hydrated;
use crate::metrics::{ActivationReport, AggregateMetrics};
use crate::outcome::{Committed, StateView};
use crate::reminder::{FireOutcome, ReminderRequest};
use crate::resident::ResidentSet;
use crate::settings::AggregateSettings;
use crate::snapshot_writer::{SnapshotWriter, WriteOutcome};
use actor_runtime::span_if_traced;

mod answers;
mod call;
mod catch_up;
mod deadline;
mod duplicates;
mod reminders;
mod residency;
mod snapshots;
mod timers;

use call::CommandReply;
pub(crate) use call::{CommandAnswer, CommandCall};
use catch_up::load;
use timers::ActorTimers;

/// What every actor of one aggregate type shares.
pub(crate) struct AggregateContext<A: Aggregate> {
    pub(crate) events: Arc<dyn EventStore>,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) settings: AggregateSettings<A>,
    pub(crate) writer: SnapshotWriter,
    pub(crate) metrics: Arc<AggregateMetrics>,
    /// Stopped aggregates kept in memory (the resident tier).
    pub(crate) resident: ResidentSet<A::State>,
}

/// Messages an aggregate actor answers.
pub(crate) enum AggregateMessage<A: Aggregate> {
    Execute {
        command: A::Command,
        call: CommandCall,
        reply: CommandReply<A>,
    },
    State {
        reply: Reply<Result<StateView<A>, ExecutorError>>,
    },
    /// Answers with a receiver that resolves when the snapshot is written (None at version 0).
    SnapshotNow {
        reply: Reply<Result<Option<oneshot::Receiver<WriteOutcome>>, ExecutorError>>,
    },
    /// Fires a due reminder, if it is still the stored one.
    Fire {
        // Boxed, like the firing in `CommandCall`: every mailbox slot is as large as the
        // largest message, and a firing is rare.
        reminder: Box<StoredReminder>,
        deadline: tokio::time::Instant,
        reply: Reply<FireOutcome>,
    },
    /// Schedules or cancels reminders from outside.
    ChangeReminders {
        requests: Vec<ReminderRequest<A>>,
        reply: Reply<Result<(), ExecutorError>>,
    },
    /// A tick of timer `id` (sent by the actor's own timer, see [`crate::timer`]).
    TimerTick { id: u64 },
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
    /// An append was fenced: another node owns this aggregate now, so this actor must go.
    fenced: bool,
    /// Activated for a creation command without reading the store: the default state at
    /// version 0 is presumed, not known. A creation command may decide on it (its append at
    /// version 0 verifies the presumption); anything else reads the stream first.
    presumed_new: bool,
    activation: ActivationReport,
    /// Commands applied lately, for deduplication.
    recent: RecentCommands,
    last_snapshot_version: u64,
    last_snapshot_at: Instant,
    snapshotted_since_activation: bool,
    /// Event payload bytes since the last snapshot (for size-based strategies).
    event_bytes_since_snapshot: u64,
    /// Encoded size of the last snapshot's body, before compression.
    last_snapshot_size: u64,
    /// Timers its decisions started; they end with this activation.
    timers: ActorTimers<A>,
}

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
        if let Some(actor) = Self::promote(context, &stream) {
            return Ok(actor);
        }
        let span = span_if_traced(|| tracing::info_span!("activation", aggregate = A::TYPE, %id));
        // Bounded like a call, so a stalled server cannot hold the key's activation forever.
        let limit = context.settings.runtime.call_timeout;
        // Boxed, so that a promotion (above) does not carry a rebuild's kilobytes of future
        // into the actor's start.
        let load = Box::pin(load::<A>(context, &stream));
        let hydrated = match tokio::time::timeout(limit, load).instrument(span).await {
            Ok(loaded) => loaded?,
            Err(_) => {
                return Err(ActivationError::Store {
                    source: StoreError::Unavailable {
                        message: format!("loading {stream} took longer than {limit:?}"),
                        source: None,
                    },
                    stream,
                });
            }
        };
        let actor = Self::from_hydrated(context, stream, hydrated, false);
        context.metrics.activated(&actor.activation);
        tracing::debug!(stream = %actor.stream, activation = ?actor.activation, "activated");
        Ok(actor)
    }

    fn is_creation(first: &AggregateMessage<A>) -> bool {
        matches!(first, AggregateMessage::Execute { command, .. } if A::is_creation(command))
    }

    /// No read: the first command decides on the default state, and its append at version 0
    /// tells whether the stream was new. The activation is counted once that is known.
    async fn activate_new(
        id: &String,
        context: &Arc<AggregateContext<A>>,
    ) -> Result<Self, ActivationError> {
        let stream = StreamId::new(A::TYPE, id)?;
        // Not new after all if it is resident.
        if let Some(actor) = Self::promote(context, &stream) {
            return Ok(actor);
        }
        Ok(Self::from_hydrated(
            context,
            stream,
            Hydrated::presumed_new(),
            true,
        ))
    }

    async fn handle(&mut self, message: AggregateMessage<A>) {
        match message {
            AggregateMessage::Execute {
                command,
                call,
                reply,
            } => {
                // A command nobody waits for any more is not started: it stores nothing. (One
                // past its deadline is refused by `execute`, before it decides.)
                if reply.is_closed() {
                    self.context.metrics.command_expired();
                    reply.send(CommandAnswer::Outcome(Err(self.expired(call.command_id))));
                    return;
                }
                let span = span_if_traced(|| {
                    tracing::debug_span!(
                        parent: &call.span,
                        "command",
                        stream = %self.stream,
                        version = self.version,
                        command_id = %call.command_id
                    )
                });
                let caller_left = || reply.is_closed();
                let outcome = self
                    .execute(&command, &call, &caller_left)
                    .instrument(span)
                    .await;
                self.count_outcome(&outcome);
                reply.send(match outcome {
                    Err(CommandError::NotStored(ExecutorError::Store(
                        error @ StoreError::Fenced { .. },
                    ))) => CommandAnswer::Fenced { command, error },
                    outcome => CommandAnswer::Outcome(outcome),
                });
            }
            AggregateMessage::State { reply } => {
                let view = match self.catch_up().await {
                    Ok(()) if self.version == 0 => Err(ExecutorError::NotFound {
                        aggregate_type: A::TYPE,
                        id: self.stream.aggregate_id().to_owned(),
                    }),
                    Ok(()) => Ok(StateView {
                        state: self.state.clone(),
                        version: self.version,
                        activation: self.activation.clone(),
                    }),
                    Err(e) => Err(e),
                };
                reply.send(view);
            }
            AggregateMessage::SnapshotNow { reply } => {
                let written = self.catch_up().await.map(|()| {
                    let (done, wait) = oneshot::channel();
                    self.take_snapshot(vec![done]).then_some(wait)
                });
                reply.send(written);
            }
            AggregateMessage::Fire {
                reminder,
                deadline,
                reply,
            } => {
                // Boxed, like the other rare arms: every message's future is as large as its
                // largest arm, and ractor moves it whole (`benches/PROFILE.md`, section 1).
                let outcome = Box::pin(self.fire(*reminder, deadline)).await;
                reply.send(outcome);
            }
            AggregateMessage::ChangeReminders { requests, reply } => {
                let changed = Box::pin(self.change_reminders(requests)).await;
                reply.send(changed);
            }
            AggregateMessage::TimerTick { id } => Box::pin(self.tick(id)).await,
        }
    }

    fn attach_timers(&mut self, timers: actor_runtime::Timers<Self>) {
        self.timers.attach(timers);
    }

    /// An aggregate with no events (a refused first command, a read of an unknown id) leaves
    /// nothing behind: unknown ids cost no memory.
    /// An actor whose append was fenced passivates too: its aggregate is served elsewhere now.
    fn should_passivate(&self) -> bool {
        self.version == 0 || self.fenced
    }

    async fn passivate(&mut self, reason: PassivationReason) {
        self.timers.clear();
        if self.presumed_new {
            // Its first command ended without telling whether the stream was new (expired,
            // indeterminate, fenced): still an activation, one that read nothing.
            self.presumed_new = false;
            self.context.metrics.activated(&self.activation);
        }
        if matches!(reason, PassivationReason::Idle | PassivationReason::Evicted)
            && self.become_resident()
        {
            return;
        }
        let behind = self.version > self.last_snapshot_version;
        if self.context.settings.snapshot_on_passivation && behind && !self.stale {
            tracing::debug!(stream = %self.stream, ?reason, version = self.version, "snapshot on passivation");
            self.take_snapshot(Vec::new());
        }
    }
}

impl<A: Aggregate> AggregateActor<A> {
    fn from_hydrated(
        context: &Arc<AggregateContext<A>>,
        stream: StreamId,
        hydrated: Hydrated<A>,
        presumed_new: bool,
    ) -> Self {
        Self {
            context: Arc::clone(context),
            last_snapshot_version: hydrated.snapshot.as_ref().map_or(0, |s| s.version),
            last_snapshot_size: hydrated.snapshot.map_or(0, |s| s.size),
            event_bytes_since_snapshot: hydrated.event_bytes_replayed,
            activation: hydrated.report(),
            state: hydrated.state,
            version: hydrated.version,
            last_event_id: hydrated.last_event_id,
            stale: false,
            fenced: false,
            presumed_new,
            recent: hydrated.recent,
            last_snapshot_at: Instant::now(),
            snapshotted_since_activation: false,
            timers: ActorTimers::new(),
            stream,
        }
    }

    /// catch up → deduplicate → decide → encode → apply → append (expected version) → remember
    /// the command → snapshot check → reply.
    ///
    /// An answer that stores nothing (a rejection, a decision of no events, a final conflict)
    /// may come from an actor behind the store (another executor appended meanwhile), whose
    /// window then misses a retried command's first attempt. Such an answer is given only once
    /// the state is known to be the stored one: if this command read no state, one read of the
    /// stream's version confirms it, and an actor found behind catches up, looks in its window
    /// again and decides again. Only a command id that may be a retry pays that read (the
    /// caller's, a reminder's, or one already sent to another node); a fresh one made for this
    /// call cannot be, and an append needs none (its expected version and the unique event ids
    /// guard it).
    ///
    /// `caller_left` tells whether nobody waits for the answer any more (never, for a command
    /// the actor sends itself).
    async fn execute(
        &mut self,
        command: &A::Command,
        call: &CommandCall,
        caller_left: &(dyn Fn() -> bool + Sync),
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let command_id = call.command_id.as_uuid();
        let mut retries = 0;
        // Whether this command read the state from the store: if so, a first attempt stored
        // before this one was sent is in the window.
        let mut read_stored = call.first_attempt;
        loop {
            // A creation command on a presumed-new stream skips the read: its append verifies.
            let presumed = self.presumed_new && !self.stale && A::is_creation(command);
            if !presumed {
                read_stored |= !self.is_current();
                self.catch_up_by(call).await?;
            }
            if let Some((first, last)) = self.recent.get(command_id) {
                return self.duplicate(call, first, last).await;
            }
            // Checked again after every read above: a catch-up, or a reload after a conflict,
            // may outlast the deadline or the caller's patience. Such a command is dropped
            // before `decide`, like one found so when taken from the mailbox.
            if tokio::time::Instant::now() >= call.deadline || caller_left() {
                return Err(self.expired(call.command_id));
            }
            let (decided, requests, timers) = {
                let settings = &self.context.settings;
                let mut ctx = Context::new(
                    self.stream.aggregate_id(),
                    call.command_id,
                    self.version,
                    settings.clock.as_ref(),
                    &settings.services,
                );
                let decided = A::decide(&self.state, command, &mut ctx);
                let (reminders, timers) = ctx.take_requests();
                (decided, reminders, timers)
            };
            if presumed && !matches!(&decided, Ok(events) if !events.is_empty()) {
                // No append will tell whether the stream was new: read it, then decide again.
                self.context.metrics.creation_hint_missed();
                read_stored = true;
                self.catch_up_by(call).await?;
                continue;
            }
            let events = match decided {
                Ok(events) => events,
                Err(error) => {
                    if !read_stored {
                        read_stored = true;
                        if self.behind_store(call).await? {
                            continue;
                        }
                    }
                    if let Some(firing) = &call.firing {
                        self.record_refused_firing(firing, error.to_string()).await;
                    }
                    return Err(CommandError::Rejected(error));
                }
            };
            let reminders = self.reminder_changes(requests, call.firing.as_deref())?;
            if events.is_empty() && reminders.is_empty() {
                if !read_stored {
                    read_stored = true;
                    if self.behind_store(call).await? {
                        continue;
                    }
                }
                self.timers.apply(timers);
                return Ok(Committed {
                    version: self.version,
                    events,
                    command_id: call.command_id,
                    duplicate: false,
                });
            }
            let batch = encode_events::<A>(&self.stream, command_id, &events, call.metadata)?;
            let last_event_id = batch.last().map(|e| e.event_id);
            let event_bytes: u64 = batch.iter().map(|e| e.payload.len() as u64).sum();
            // Apply before appending: if user code panics here the actor stops with nothing
            // stored. Until the append is confirmed the state is marked stale.
            self.stale = true;
            for event in &events {
                A::apply(&mut self.state, event);
            }
            let append_span = span_if_traced(|| {
                tracing::debug_span!("append", expected = self.version, events = events.len())
            });
            let store = &self.context.events;
            let append = if reminders.is_empty() {
                store.append(&self.stream, self.version, batch)
            } else {
                // Stored in the same transaction as the events, or not at all.
                store.append_with_reminders(&self.stream, self.version, batch, reminders, None)
            };
            let appended = deadline::by(call.deadline, append.instrument(append_span)).await;
            let appended = match appended {
                Ok(appended) => appended,
                Err(_) => return Err(self.timed_out(call)),
            };
            match appended {
                Ok(receipt) => {
                    if self.presumed_new {
                        self.presumed_new = false;
                        self.context
                            .metrics
                            .activated_without_read(&self.activation);
                    }
                    self.stale = false;
                    if !events.is_empty() {
                        // (Only reminder changes otherwise: no version, nothing to remember.)
                        self.version = receipt.last_version;
                        self.last_event_id = last_event_id;
                        self.event_bytes_since_snapshot += event_bytes;
                        self.recent.record_command(
                            command_id,
                            receipt.first_version,
                            receipt.last_version,
                            receipt.recorded_at,
                            self.context.settings.dedup,
                        );
                        self.consider_snapshot(&events);
                    }
                    self.timers.apply(timers);
                    return Ok(Committed {
                        version: self.version,
                        events,
                        command_id: call.command_id,
                        duplicate: false,
                    });
                }
                Err(StoreError::VersionConflict {
                    stream,
                    expected,
                    actual,
                }) if presumed => {
                    // The stream was not new. The state is stale now: the next round reads it.
                    self.context.metrics.creation_hint_missed();
                    tracing::debug!(%stream, expected, actual, "creation command on an existing stream; re-deciding on its stored state");
                }
                Err(StoreError::VersionConflict {
                    stream,
                    expected,
                    actual,
                }) => {
                    self.context.metrics.conflict();
                    if retries >= self.context.settings.max_conflict_retries {
                        // The writer that won may have been this command's first attempt
                        // (never for an id made for this call).
                        if !call.first_attempt
                            && let Some(duplicate) = self.stored_meanwhile(call).await
                        {
                            return duplicate;
                        }
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
                // Older than the window, but its events are stored: answer with those.
                Err(StoreError::CommandAlreadyApplied { .. }) => {
                    return self.duplicate_from_store(call).await;
                }
                Err(error @ StoreError::Fenced { .. }) => {
                    self.fenced = true;
                    return Err(CommandError::NotStored(ExecutorError::Store(error)));
                }
                Err(error) if error.is_indeterminate() => {
                    return Err(self.indeterminate(call, ExecutorError::Store(error)));
                }
                Err(other) => return Err(CommandError::NotStored(other.into())),
            }
        }
    }
}
