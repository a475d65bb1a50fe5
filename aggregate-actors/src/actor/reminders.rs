//! The actor's side of durable reminders: turning what `decide` asked for into stored
//! changes, firing a due reminder as a command of this aggregate, and changes from outside.
//!
//! A firing is checked against the stored reminder before its command runs, and again by the
//! store in the append itself: its `Fired` change is a precondition of the whole append
//! ([`StoreError::StaleFiring`] otherwise). Within one executor every reminder change of a
//! stream goes through its actor, but another executor on the same store (two processes, no
//! cluster) may replace or cancel the reminder between the check and the append; the store's
//! check then refuses the command's events too, and the firing is [`FireOutcome::Stale`].

use chrono::{DateTime, Utc};
use event_stores::{EventMetadata, ReminderChange, ReminderState, StoreError, StoredReminder};
use uuid::Uuid;

use super::{AggregateActor, CommandCall};
use crate::aggregate::Aggregate;
use crate::error::{CommandError, ExecutorError};
use crate::reminder::{FireOutcome, ReminderRequest, firing_command_id, next_due};

/// The reminder a command is the firing of.
#[derive(Debug, Clone)]
pub(crate) struct Firing {
    name: String,
    reminder_id: Uuid,
    due_at: DateTime<Utc>,
    period_ms: Option<u64>,
}

impl Firing {
    /// The stored change that records this firing at `now`, with `error` when the command was
    /// refused.
    fn change(&self, now: DateTime<Utc>, error: Option<String>) -> ReminderChange {
        ReminderChange::Fired {
            name: self.name.clone(),
            reminder_id: self.reminder_id,
            due_at: self.due_at,
            fired_at: now,
            // A periodic reminder without a next time a store keeps ends like a one-shot one.
            next_due_at: self
                .period_ms
                .and_then(|period| next_due(self.due_at, period, now)),
            error: error.map(storable_error),
        }
    }
}

/// Most bytes of a refusal's message kept on the reminder.
const MAX_ERROR_LEN: usize = 1_024;

/// A refusal's message as the store takes it: control characters (NUL included) replaced by
/// spaces, cut to [`MAX_ERROR_LEN`] bytes at a character boundary. A message the store refused
/// would keep the refusal from ever being recorded.
fn storable_error(message: String) -> String {
    let mut clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    clean
}

impl<A: Aggregate> AggregateActor<A> {
    fn now(&self) -> DateTime<Utc> {
        self.context.settings.clock.now()
    }

    /// The stored form of the reminder changes a decision asked for, plus the record of the
    /// firing the command is, if it is one. Empty (no allocation) for an ordinary command.
    pub(super) fn reminder_changes(
        &self,
        requests: Vec<ReminderRequest<A>>,
        firing: Option<&Firing>,
    ) -> Result<Vec<ReminderChange>, CommandError<A::Error>> {
        if requests.is_empty() && firing.is_none() {
            return Ok(Vec::new());
        }
        let mut changes = match (&self.context.settings.reminders, requests.is_empty()) {
            (_, true) => Vec::new(),
            (Some(codec), false) => codec
                .changes(requests)
                .map_err(|e| CommandError::NotStored(e.into()))?,
            (None, false) => {
                return Err(CommandError::NotStored(ExecutorError::RemindersOff {
                    aggregate_type: A::TYPE,
                }));
            }
        };
        if let Some(firing) = firing {
            // First, so that a reminder the command schedules again under the same name is
            // the one that stays.
            changes.insert(0, firing.change(self.now(), None));
        }
        Ok(changes)
    }

    /// Records that `firing`'s command was refused: a one-shot reminder is kept as rejected, a
    /// periodic one moves on, both with the error. Not retried: if the record itself fails, the
    /// reminder fires again later and is refused again.
    pub(super) async fn record_refused_firing(&self, firing: &Firing, error: String) {
        let change = firing.change(self.now(), Some(error));
        let recorded = self
            .context
            .events
            .append_with_reminders(&self.stream, self.version, Vec::new(), vec![change], None)
            .await;
        match recorded {
            Ok(_) => {}
            // Replaced, cancelled or moved on meanwhile: there is nothing left to record it on.
            Err(error @ StoreError::StaleFiring { .. }) => {
                tracing::debug!(stream = %self.stream, reminder = %firing.name, %error, "refused reminder firing not recorded: the reminder changed");
            }
            Err(error) => {
                tracing::warn!(stream = %self.stream, reminder = %firing.name, %error, "could not record a refused reminder firing");
            }
        }
    }

    /// Fires `requested` if it is still the stored reminder of its name: its command runs as
    /// a command of this aggregate under the firing's own command id, and the same append moves
    /// the reminder on.
    pub(super) async fn fire(
        &mut self,
        requested: StoredReminder,
        deadline: tokio::time::Instant,
    ) -> FireOutcome {
        let Some(codec) = self.context.settings.reminders else {
            return FireOutcome::Failed(ExecutorError::RemindersOff {
                aggregate_type: A::TYPE,
            });
        };
        if let Err(error) = self.catch_up().await {
            return FireOutcome::Failed(error);
        }
        let stored = match self.context.events.reminders_of(&self.stream).await {
            Ok(reminders) => reminders.into_iter().find(|r| r.name == requested.name),
            Err(error) => return FireOutcome::Failed(error.into()),
        };
        let Some(stored) = stored.filter(|s| {
            s.reminder_id == requested.reminder_id
                && s.due_at == requested.due_at
                && s.state == ReminderState::Scheduled
        }) else {
            return self.fired_before(&requested).await;
        };
        let firing = Firing {
            name: stored.name.clone(),
            reminder_id: stored.reminder_id,
            due_at: stored.due_at,
            period_ms: stored.period_ms,
        };
        let command = match codec.command(&stored) {
            Ok(command) => command,
            Err(error) => {
                let error = format!("the reminder's command cannot be decoded: {error}");
                self.record_refused_firing(&firing, error.clone()).await;
                return FireOutcome::Rejected(error);
            }
        };
        let call = CommandCall {
            command_id: firing_command_id(stored.reminder_id, stored.due_at),
            metadata: EventMetadata {
                correlation_id: Some(stored.reminder_id),
                causation_id: Some(stored.reminder_id),
                trace_parent: None,
            },
            deadline,
            budget: deadline.saturating_duration_since(tokio::time::Instant::now()),
            span: tracing::Span::current(),
            firing: Some(Box::new(firing.clone())),
            // A firing's id is the same at every attempt (after a crash, on another node).
            first_attempt: false,
        };
        // A firing is bounded by its deadline alone: whether the scheduler still waits is not
        // watched.
        match self.execute(&command, &call, &|| false).await {
            Ok(committed) if committed.duplicate => {
                // An earlier attempt stored the command; make sure the reminder moved on too.
                let change = firing.change(self.now(), None);
                let moved = self
                    .context
                    .events
                    .append_with_reminders(
                        &self.stream,
                        self.version,
                        Vec::new(),
                        vec![change],
                        None,
                    )
                    .await;
                match moved {
                    // Stale: it is no longer in the form that fired, so it has moved on (or
                    // was changed since), and the firing is done all the same.
                    Ok(_) | Err(StoreError::StaleFiring { .. }) => FireOutcome::Fired {
                        version: committed.version,
                        duplicate: true,
                    },
                    Err(error) => FireOutcome::Failed(error.into()),
                }
            }
            Ok(committed) => FireOutcome::Fired {
                version: committed.version,
                duplicate: false,
            },
            // The reminder changed after the check above (another executor on the store
            // replaced, cancelled or fired it): the store refused the whole append.
            Err(CommandError::NotStored(ExecutorError::Store(StoreError::StaleFiring {
                ..
            }))) => FireOutcome::Stale,
            Err(CommandError::Rejected(error)) => FireOutcome::Rejected(error.to_string()),
            Err(CommandError::NotStored(error)) => FireOutcome::Failed(error),
            Err(CommandError::Indeterminate(indeterminate)) => {
                FireOutcome::Failed(indeterminate.cause)
            }
        }
    }

    /// The outcome of a firing whose reminder is no longer in the form that fired: `Fired`
    /// (a duplicate) when this very firing's command was stored, by an earlier attempt whose
    /// outcome the scheduler did not learn (its retry lands here), `Stale` when the reminder
    /// was replaced, cancelled or moved on by something else. Looked up in the window, then in
    /// the store; a command that stored no events cannot be told apart and is `Stale`, which
    /// ends the firing all the same.
    async fn fired_before(&self, requested: &StoredReminder) -> FireOutcome {
        let command_id = firing_command_id(requested.reminder_id, requested.due_at).as_uuid();
        if let Some((_, last)) = self.recent.get(command_id) {
            return FireOutcome::Fired {
                version: last,
                duplicate: true,
            };
        }
        match self
            .context
            .events
            .read_command(&self.stream, command_id)
            .await
        {
            Ok(stored) => match stored.last() {
                Some(last) => FireOutcome::Fired {
                    version: last.version,
                    duplicate: true,
                },
                None => FireOutcome::Stale,
            },
            Err(error) => {
                tracing::debug!(stream = %self.stream, reminder = %requested.name, %error, "cannot tell whether a moved-on reminder's firing was stored; stale");
                FireOutcome::Stale
            }
        }
    }

    /// Applies reminder changes asked for from outside (not by a command): stored at the
    /// current version, through this actor like any write of the stream.
    pub(super) async fn change_reminders(
        &mut self,
        requests: Vec<ReminderRequest<A>>,
    ) -> Result<(), ExecutorError> {
        let Some(codec) = self.context.settings.reminders else {
            return Err(ExecutorError::RemindersOff {
                aggregate_type: A::TYPE,
            });
        };
        self.catch_up().await?;
        let changes = codec.changes(requests)?;
        let stored = self
            .context
            .events
            .append_with_reminders(&self.stream, self.version, Vec::new(), changes, None)
            .await;
        match stored {
            Ok(_) => Ok(()),
            Err(error) => {
                if matches!(error, event_stores::StoreError::VersionConflict { .. }) {
                    // Another writer moved the stream: read it before the next call.
                    self.stale = true;
                }
                Err(error.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_message_is_stored_without_control_characters_and_within_the_limit() {
        assert_eq!(storable_error("bad\0news\nhere".into()), "bad news here");
        let stored = storable_error("é".repeat(MAX_ERROR_LEN));
        assert!(stored.len() <= MAX_ERROR_LEN && stored.len() >= MAX_ERROR_LEN - 1);
        assert!(stored.chars().all(|c| c == 'é'));
    }
}
