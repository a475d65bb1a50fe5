//! The running timers of one live aggregate, and a tick delivering its command.

use actor_runtime::{TimerHandle, Timers};
use event_stores::EventMetadata;
use tracing::Instrument;

use super::{AggregateActor, AggregateMessage, CommandCall};
use crate::aggregate::Aggregate;
use crate::command::CommandId;
use crate::error::CommandError;
use crate::timer::{TimerCommand, TimerRequest};

/// The timers a live aggregate's decisions started. They end with the actor: dropping this
/// drops every [`TimerHandle`].
pub(super) struct ActorTimers<A: Aggregate> {
    timers: Option<Timers<AggregateActor<A>>>,
    running: Vec<Running<A>>,
    next_id: u64,
}

struct Running<A: Aggregate> {
    /// Ticks carry this id, not the name: a tick of a replaced or cancelled timer that was
    /// already on its way finds no timer with its id and is ignored.
    id: u64,
    name: String,
    command: TimerCommand<A>,
    _handle: TimerHandle,
}

impl<A: Aggregate> ActorTimers<A> {
    pub(super) fn new() -> Self {
        Self {
            timers: None,
            running: Vec::new(),
            next_id: 0,
        }
    }

    pub(super) fn attach(&mut self, timers: Timers<AggregateActor<A>>) {
        self.timers = Some(timers);
    }

    /// Starts and cancels timers as a successful decision asked, in its order.
    pub(super) fn apply(&mut self, requests: Vec<TimerRequest<A>>) {
        for request in requests {
            match request {
                TimerRequest::Cancel(name) => self.running.retain(|t| t.name != name),
                TimerRequest::Start(timer) => {
                    self.running.retain(|t| t.name != timer.name);
                    let Some(timers) = &self.timers else {
                        // Only an actor outside a directory has none; the runtime always attaches.
                        tracing::warn!(timer = %timer.name, "no timers attached; timer not started");
                        continue;
                    };
                    let id = self.next_id;
                    self.next_id += 1;
                    let handle = match &timer.command {
                        TimerCommand::Once(_) => {
                            timers.send_after(timer.delay, AggregateMessage::TimerTick { id })
                        }
                        TimerCommand::Every(_) => timers
                            .send_every(timer.delay, move || AggregateMessage::TimerTick { id }),
                    };
                    self.running.push(Running {
                        id,
                        name: timer.name,
                        command: timer.command,
                        _handle: handle,
                    });
                }
            }
        }
    }

    /// The timer's name and the command for tick `id`; a one-shot timer is over with it.
    /// `None` for a stale tick.
    fn take_tick(&mut self, id: u64) -> Option<(String, A::Command)> {
        let at = self.running.iter().position(|t| t.id == id)?;
        match &self.running[at].command {
            TimerCommand::Every(make) => Some((self.running[at].name.clone(), make())),
            TimerCommand::Once(_) => {
                let timer = self.running.swap_remove(at);
                match timer.command {
                    TimerCommand::Once(command) => Some((timer.name, command)),
                    TimerCommand::Every(_) => None,
                }
            }
        }
    }

    /// Stops every timer (on passivation).
    pub(super) fn clear(&mut self) {
        self.running.clear();
    }
}

impl<A: Aggregate> AggregateActor<A> {
    /// Delivers the command of timer tick `id` like any other command, with a fresh command
    /// id: at most once per tick, never retried.
    pub(super) async fn tick(&mut self, id: u64) {
        let Some((name, command)) = self.timers.take_tick(id) else {
            return;
        };
        self.context.metrics.timer_ticked();
        let call = CommandCall {
            command_id: CommandId::new(),
            metadata: EventMetadata::default(),
            deadline: actor_runtime::instant_after(
                tokio::time::Instant::now(),
                self.context.settings.runtime.call_timeout,
            ),
            budget: self.context.settings.runtime.call_timeout,
            span: tracing::Span::none(),
            firing: None,
            first_attempt: true,
        };
        let span = tracing::debug_span!("timer", stream = %self.stream, timer = %name);
        // Sent by the actor itself: no caller to leave.
        let outcome = self
            .execute(&command, &call, &|| false)
            .instrument(span)
            .await;
        self.count_outcome(&outcome);
        match outcome {
            Ok(_) => {}
            Err(CommandError::Rejected(error)) => {
                tracing::debug!(stream = %self.stream, timer = %name, %error, "timer command rejected");
            }
            Err(error) => {
                tracing::warn!(stream = %self.stream, timer = %name, %error, "timer command failed");
            }
        }
    }
}
