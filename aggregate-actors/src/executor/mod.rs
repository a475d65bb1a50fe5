//! The executor: the one entry point callers use. It routes each command to the live actor of
//! its aggregate (activating it on demand) and offers state reads, snapshots on demand,
//! reconstruction and statistics.
//!
//! Routing is a `TypeId` lookup in an immutable map plus the runtime's concurrent map lookup
//! of the id: no central actor sits on the command path.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actor_runtime::{Directory, Misplaced, RuntimeError, Transport};
use event_stores::{StoreError, StoredReminder, StreamId};

use crate::actor::{
    AggregateActor, AggregateContext, AggregateMessage, CommandAnswer, CommandCall,
};
use crate::aggregate::Aggregate;
use crate::batch::options::BatchOptions;
use crate::batch::report::BatchReport;
use crate::command::{CommandId, CommandOptions};
use crate::error::{CommandError, ExecutorError, Indeterminate};
use crate::outcome::{Committed, StateView, TypeStats};
use crate::reminder::FireOutcome;
use crate::remote::{self, Forwarded, RemoteCodec, RemoteHandler};
use crate::routing::{Hop, Route};
use crate::shared::Shared;
use actor_runtime::{instant_after, span_if_traced};
use tracing::Instrument;

mod operations;

/// Runs commands against event-sourced aggregates held by virtual actors. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) shared: Shared,
    /// Looked up on every command; the keys are types, not input, so a fast hash suffices.
    pub(crate) types: HashMap<TypeId, Box<dyn Registered>, foldhash::fast::RandomState>,
    pub(crate) order: Vec<TypeId>,
    /// Handlers of forwarded calls, by aggregate type name.
    pub(crate) remote: HashMap<&'static str, Arc<dyn RemoteHandler<Executor>>>,
    pub(crate) shut_down: AtomicBool,
    pub(crate) shutdown_timeout: Duration,
}

/// One registered aggregate type, type-erased so the executor can hold many.
#[async_trait::async_trait]
pub(crate) trait Registered: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn aggregate_type(&self) -> &'static str;
    fn stats(&self) -> TypeStats;
    /// Fires a due reminder of this type through its aggregate's actor.
    async fn fire(&self, reminder: StoredReminder) -> FireOutcome;
    /// Snapshots `ids` of this type, or every aggregate of it when `None` (see [`crate::batch`]).
    async fn snapshot_batch(
        &self,
        executor: &Executor,
        ids: Option<Vec<String>>,
        options: &BatchOptions,
    ) -> Result<BatchReport, ExecutorError>;
    async fn passivate_all(&self);
    async fn passivate_matching(
        &self,
        matches: &(dyn for<'k> Fn(&'static str, &'k str) -> bool + Sync),
    );
    async fn shutdown(&self);
}

pub(crate) struct Registration<A: Aggregate> {
    pub(crate) directory: Directory<AggregateActor<A>>,
    pub(crate) context: Arc<AggregateContext<A>>,
    /// Set for types served to and forwarded to other nodes.
    pub(crate) codec: Option<RemoteCodec<A>>,
}

#[async_trait::async_trait]
impl<A: Aggregate> Registered for Registration<A> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn aggregate_type(&self) -> &'static str {
        A::TYPE
    }

    async fn snapshot_batch(
        &self,
        executor: &Executor,
        ids: Option<Vec<String>>,
        options: &BatchOptions,
    ) -> Result<BatchReport, ExecutorError> {
        match ids {
            Some(ids) => executor.create_snapshots::<A>(ids, options).await,
            None => executor.rebuild_snapshots::<A>(options).await,
        }
    }

    async fn fire(&self, reminder: StoredReminder) -> FireOutcome {
        let key = reminder.stream.aggregate_id().to_owned();
        let budget = self.context.settings.runtime.call_timeout;
        let deadline = instant_after(tokio::time::Instant::now(), budget);
        let answer = self
            .directory
            .call_timeout(&key, budget, |reply| AggregateMessage::Fire {
                reminder: Box::new(reminder),
                deadline,
                reply,
            })
            .await;
        match answer {
            Ok(outcome) => outcome,
            Err(error) => FireOutcome::Failed(error.into()),
        }
    }

    fn stats(&self) -> TypeStats {
        TypeStats {
            aggregate: self.context.metrics.stats(),
            runtime: self.directory.stats(),
            resident: self.context.resident.stats(),
        }
    }

    async fn passivate_all(&self) {
        self.directory.passivate_all().await;
        self.context.demote_resident(|_| true);
    }

    async fn passivate_matching(
        &self,
        matches: &(dyn for<'k> Fn(&'static str, &'k str) -> bool + Sync),
    ) {
        self.directory
            .passivate_matching(|id: &String| matches(A::TYPE, id.as_str()))
            .await;
        self.context.demote_resident(|id| matches(A::TYPE, id));
    }

    async fn shutdown(&self) {
        self.directory.shutdown().await;
        self.context.demote_resident(|_| true);
    }
}

/// What a command handed to this node's actor came to.
enum Local<A: Aggregate> {
    /// Its outcome (or why it was not stored).
    Done(Result<Committed<A>, CommandError<A::Error>>),
    /// Its id is no longer served here, and no actor here took it: the command comes back
    /// unsent, for the owner.
    Moved(A::Command),
    /// The database's fence refused its append (another node took the id's shard before this
    /// one noticed): nothing stored, and the command comes back for the new owner.
    Fenced(A::Command, StoreError),
}

impl Executor {
    /// Runs `command` on aggregate `id` of type `A` with a fresh command id and the type's call
    /// timeout. On success the events are durable in the event store. On error, see
    /// [`CommandError`]: [`Rejected`](CommandError::Rejected) and
    /// [`NotStored`](CommandError::NotStored) stored nothing;
    /// [`Indeterminate`](CommandError::Indeterminate) may have, and is retried safely with
    /// `execute_with` and its command id.
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_with::<A>(id, command, CommandOptions::new())
            .await
    }

    /// [`execute`](Self::execute) with options: your own [`CommandId`](crate::CommandId) (send
    /// it again and the command is applied at most once: a repeat returns the original outcome
    /// with [`Committed::duplicate`] set), a timeout or deadline, and the correlation and
    /// causation ids stored on every event (an [`EventMetadata`](event_stores::EventMetadata) converts into options).
    pub async fn execute_with<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
        options: impl Into<CommandOptions>,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let registration = self.registration::<A>(id)?;
        let mut options = options.into();
        let now = tokio::time::Instant::now();
        let budget = options.budget_at(now, registration.context.settings.runtime.call_timeout);
        let deadline = instant_after(now, budget);
        // An id made here has been sent nowhere yet: the command cannot have been stored.
        let fresh = options.command_id.is_none();
        let command_id = *options.command_id.get_or_insert_with(CommandId::new);
        options.deadline = Some(deadline);
        let span = span_if_traced(|| {
            tracing::info_span!(
                "execute",
                aggregate = A::TYPE,
                id,
                command_id = %command_id,
                trace_id = tracing::field::Empty,
            )
        });
        if span.is_disabled() {
            // No subscriber wants it: skip the instrumented wrapper on the hot path.
            return self
                .route_execute::<A>(registration, id, command, options, deadline, fresh)
                .await;
        }
        if let Some(trace) = options.metadata.trace_parent {
            span.record("trace_id", trace.trace_id_hex());
        }
        self.route_execute::<A>(registration, id, command, options, deadline, fresh)
            .instrument(span)
            .await
    }

    /// Where [`execute_with`](Self::execute_with) sends the command: this node's actor, or the
    /// owner's, hop by hop. `fresh`: the command id was made for this call.
    async fn route_execute<A: Aggregate>(
        &self,
        registration: &Registration<A>,
        id: &str,
        mut command: A::Command,
        options: CommandOptions,
        deadline: tokio::time::Instant,
        fresh: bool,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let key = id.to_owned();
        let mut route = self.route(registration, &key, deadline);
        // Made only if no hop answers: the common path allocates no error.
        let mut last = None;
        while let Some(hop) = route.next().await {
            let node = match hop {
                Hop::Here => {
                    // As `execute_here` would: the route may have waited, so look again.
                    if self.is_shut_down() {
                        return Err(ExecutorError::ShuttingDown.into());
                    }
                    // A hop that did not answer may have stored it.
                    let first_attempt = fresh && last.is_none();
                    let sent = self
                        .execute_local::<A>(
                            registration,
                            id,
                            &key,
                            command,
                            &options,
                            first_attempt,
                        )
                        .await;
                    match sent {
                        Local::Done(outcome) => return outcome,
                        // Moved away before any actor here took it (a handoff): on to the
                        // owner, within the same deadline.
                        Local::Moved(back) => {
                            command = back;
                            last = Some(ExecutorError::NotLocal { id: key.clone() });
                            continue;
                        }
                        // Taken over behind this node's back: the route asks for an early look
                        // at the owners' table and goes on to the new owner, same deadline.
                        Local::Fenced(back, error) => {
                            command = back;
                            last = Some(ExecutorError::Store(error));
                            continue;
                        }
                    }
                }
                Hop::There(node) => node,
            };
            let (Some(transport), Some(codec)) =
                (&self.inner.shared.transport, &registration.codec)
            else {
                break;
            };
            let forwarded = remote::forward_execute(
                &**transport,
                &node,
                codec,
                id,
                &command,
                &options,
                route.remaining(),
            )
            .await;
            match forwarded {
                Forwarded::Done(outcome) => return outcome,
                Forwarded::Retry(error) => last = Some(error),
            }
        }
        Err(CommandError::NotStored(last.unwrap_or_else(|| {
            ExecutorError::NotLocal { id: key.clone() }
        })))
    }

    /// Runs a command on this node's actor for `id`, never forwarding it.
    pub(crate) async fn execute_here<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
        options: CommandOptions,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let registration = self.registration::<A>(id)?;
        let key = id.to_owned();
        // Sent here by another node: its caller may be retrying.
        match self
            .execute_local::<A>(registration, id, &key, command, &options, false)
            .await
        {
            Local::Done(outcome) => outcome,
            // Its sender looks the route up again.
            Local::Moved(_) => Err(CommandError::NotStored(ExecutorError::NotLocal { id: key })),
            // Answered as "not owner" too (`remote::not_stored`): stored nothing.
            Local::Fenced(_, error) => Err(CommandError::NotStored(ExecutorError::Store(error))),
        }
    }

    /// [`execute_here`](Self::execute_here) with the registration already looked up (and `id`
    /// checked) and the directory's key made, so that a routed command does neither twice.
    /// `first_attempt`: the id was made for this call and sent nowhere before.
    async fn execute_local<A: Aggregate>(
        &self,
        registration: &Registration<A>,
        id: &str,
        key: &String,
        command: A::Command,
        options: &CommandOptions,
        first_attempt: bool,
    ) -> Local<A> {
        let command_id = options.command_id.unwrap_or_default();
        // One clock read gives both the budget and the deadline the actor checks.
        let now = tokio::time::Instant::now();
        let budget = options.budget_at(now, registration.context.settings.runtime.call_timeout);
        if budget.is_zero() {
            // Past its deadline before it was sent: certainly not stored, so say so rather
            // than race the actor's own expiry check against a zero timeout.
            registration.context.metrics.command_expired();
            return Local::Done(Err(CommandError::NotStored(ExecutorError::Expired {
                id: id.to_owned(),
                command_id,
            })));
        }
        let call = CommandCall {
            command_id,
            metadata: options.metadata,
            deadline: instant_after(now, budget),
            budget,
            // The parent of the actor's `command` span, a debug span: not looked up (a
            // thread-local and the subscriber's registry) when no subscriber enables debug.
            span: if tracing::Level::DEBUG <= tracing::level_filters::STATIC_MAX_LEVEL
                && tracing::Level::DEBUG <= tracing::level_filters::LevelFilter::current()
            {
                span_if_traced(tracing::Span::current)
            } else {
                tracing::Span::none()
            },
            firing: None,
            first_attempt,
        };
        let answer = registration
            .directory
            .call_timeout_or_misplaced(key, budget, |reply| AggregateMessage::Execute {
                command,
                call,
                reply,
            })
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(Misplaced(message)) => {
                return match *message {
                    AggregateMessage::Execute { command, .. } => Local::Moved(command),
                    // Not what was sent: refused all the same.
                    _ => Local::Done(Err(CommandError::NotStored(ExecutorError::NotLocal {
                        id: id.to_owned(),
                    }))),
                };
            }
        };
        Local::Done(match answer {
            Ok(CommandAnswer::Outcome(outcome)) => outcome,
            Ok(CommandAnswer::Fenced { command, error }) => return Local::Fenced(command, error),
            // The command may be queued or running: its outcome is unknown.
            Err(error @ (RuntimeError::Timeout { .. } | RuntimeError::Abandoned { .. })) => {
                Err(CommandError::Indeterminate(Indeterminate {
                    id: id.to_owned(),
                    command_id,
                    cause: error.into(),
                }))
            }
            Err(error) => Err(CommandError::NotStored(error.into())),
        })
    }

    /// The current state and version of aggregate `id`. An id with no events is
    /// [`ExecutorError::NotFound`] and leaves nothing live (its activation, one read, is what
    /// finds that out; the actor is passivated before this returns).
    pub async fn state<A: Aggregate>(&self, id: &str) -> Result<StateView<A>, ExecutorError> {
        let key = id.to_owned();
        self.query::<A, _, _, _>(
            id,
            &key,
            |registration, left| self.state_local::<A>(registration, &key, left),
            |transport, node, left| async move {
                remote::forward_state::<A>(transport, &node, id, left).await
            },
        )
        .await
    }

    /// Runs a call that changes no events (a state read, a snapshot) where `id` is served:
    /// `here` when on this node, `there` (forwarded to the node at an address) otherwise,
    /// looking the route up again after a retryable miss until the type's call timeout. `key`
    /// is the directory's key for `id`, made by the caller so that `here` can borrow it; `here`
    /// gets the registration and the time left. When the id moved away before an actor here
    /// took the call (a handoff), the call goes on to the owner.
    async fn query<'s, A: Aggregate, T, Here, There>(
        &'s self,
        id: &'s str,
        key: &'s String,
        here: impl Fn(&'s Registration<A>, Duration) -> Here,
        there: impl Fn(&'s dyn Transport, String, Duration) -> There,
    ) -> Result<T, ExecutorError>
    where
        Here: Future<Output = Result<T, ExecutorError>>,
        There: Future<Output = Forwarded<Result<T, ExecutorError>>>,
    {
        let registration = self.registration::<A>(id)?;
        let deadline = instant_after(
            tokio::time::Instant::now(),
            registration.context.settings.runtime.call_timeout,
        );
        let mut route = self.route(registration, key, deadline);
        let mut last = None;
        while let Some(hop) = route.next().await {
            let node = match hop {
                Hop::Here => match here(registration, route.remaining()).await {
                    Err(error @ ExecutorError::NotLocal { .. }) => {
                        last = Some(error);
                        continue;
                    }
                    outcome => return outcome,
                },
                Hop::There(node) => node,
            };
            let Some(transport) = &self.inner.shared.transport else {
                break;
            };
            match there(&**transport, node, route.remaining()).await {
                Forwarded::Done(outcome) => return outcome,
                Forwarded::Retry(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| ExecutorError::NotLocal { id: id.to_owned() }))
    }

    /// The state of this node's actor for `id`, never forwarding.
    pub(crate) async fn state_here<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<StateView<A>, ExecutorError> {
        let registration = self.registration::<A>(id)?;
        let timeout = registration.context.settings.runtime.call_timeout;
        self.state_local(registration, &id.to_owned(), timeout)
            .await
    }

    /// [`state_here`](Self::state_here) with the registration already looked up (and the id
    /// checked) and the directory's key made, within `timeout`.
    async fn state_local<A: Aggregate>(
        &self,
        registration: &Registration<A>,
        key: &String,
        timeout: Duration,
    ) -> Result<StateView<A>, ExecutorError> {
        let was_live = registration.directory.is_live(key);
        // The activation's read tells whether the aggregate exists: no separate check first.
        let view = registration
            .directory
            .call_timeout(key, timeout, |reply| AggregateMessage::State { reply })
            .await?;
        if let Err(ExecutorError::NotFound { .. }) = &view {
            self.leave_no_trace::<A>(key, was_live).await;
        }
        view
    }

    /// Passivates the actor a query about an aggregate with no events activated, so that an
    /// unknown id leaves nothing live (a command that arrived meanwhile is handled first).
    async fn leave_no_trace<A: Aggregate>(&self, key: &String, was_live: bool) {
        if let (false, Some(registration)) = (was_live, self.typed::<A>()) {
            registration.directory.passivate(key).await;
        }
    }

    pub(crate) fn remote_handler(
        &self,
        aggregate_type: &str,
    ) -> Option<Arc<dyn RemoteHandler<Executor>>> {
        self.inner.remote.get(aggregate_type).cloned()
    }

    pub(crate) fn remote_codec<A: Aggregate>(&self) -> Option<&RemoteCodec<A>> {
        self.typed::<A>().and_then(|r| r.codec.as_ref())
    }

    /// The attempts of a call for `key` of `registration`'s type at reaching the node that
    /// serves it, until `deadline`; forwarding only if the type can travel to other nodes.
    fn route<'a, A: Aggregate>(
        &self,
        registration: &'a Registration<A>,
        key: &'a String,
        deadline: tokio::time::Instant,
    ) -> Route<'a> {
        let forwarding = self.inner.shared.transport.is_some() && registration.codec.is_some();
        Route::new(
            &**registration.directory.placement(),
            key,
            deadline,
            forwarding,
        )
    }

    /// The registered type named `aggregate_type`, type-erased.
    pub(crate) fn registered_by_name(&self, aggregate_type: &str) -> Option<&dyn Registered> {
        self.inner
            .types
            .values()
            .find(|registered| registered.aggregate_type() == aggregate_type)
            .map(|registered| &**registered)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::Relaxed)
    }

    fn typed<A: Aggregate>(&self) -> Option<&Registration<A>> {
        self.inner
            .types
            .get(&TypeId::of::<A>())
            .and_then(|registration| registration.as_any().downcast_ref::<Registration<A>>())
    }

    pub(crate) fn registration<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<&Registration<A>, ExecutorError> {
        if self.inner.shut_down.load(Ordering::Relaxed) {
            return Err(ExecutorError::ShuttingDown);
        }
        let registration = self
            .typed::<A>()
            .ok_or(ExecutorError::UnknownAggregateType(A::TYPE))?;
        StreamId::check(A::TYPE, id)?;
        Ok(registration)
    }

    pub(crate) fn not_found<A: Aggregate>(&self, id: &str) -> ExecutorError {
        ExecutorError::NotFound {
            aggregate_type: A::TYPE,
            id: id.to_owned(),
        }
    }
}
