//! [`Reminders`]: the in-memory store's reminders, by stream and name, with an index of the
//! scheduled ones by due time.
//!
//! One mutex guards both maps. Changes are applied while the stream's own lock is held (see
//! `event_store`), so a call's events and its reminder changes are atomic with respect to
//! other writes to that stream; plain appends never touch this mutex. A call's `Fired`
//! changes are checked ([`Reminders::check`]) under the same lock before any of it is stored.
//! A refusal from that check is answered only after the call's event ids are looked at, so the
//! order of the checks is the trait's (version, event ids, then firings): a stale firing whose
//! command is already stored is `CommandAlreadyApplied`, as in PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::error::StoreError;
use crate::reminder::{DueReminders, ReminderChange, ReminderState, StoredReminder};
use crate::stream::StreamId;

/// The reminders of every stream.
#[derive(Default)]
pub(super) struct Reminders {
    /// Each stream's reminders, by name (byte order, like PostgreSQL's `COLLATE "C"`).
    by_stream: HashMap<StreamId, BTreeMap<String, StoredReminder>, super::Hasher>,
    /// The `Scheduled` reminders, by due time, then stream and name.
    due: BTreeSet<(DateTime<Utc>, StreamId, String)>,
}

/// A time as stored: to the microsecond, like PostgreSQL.
fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// What a reminder is, as far as a firing's precondition looks: id, due time, state.
type Form = (Uuid, DateTime<Utc>, ReminderState);

impl Reminders {
    /// Checks that each `Fired` among `changes` finds, when its turn comes (the changes before
    /// it applied), `stream`'s reminder of its name scheduled under its id at its due time; the
    /// [`StoreError::StaleFiring`] refusal otherwise. Changes nothing: called under the stream's
    /// lock before anything of the call is stored, so that a refused call stores nothing. The
    /// caller answers with the refusal only when the call's event ids pass (they come first).
    pub(super) fn check(
        &self,
        stream: &StreamId,
        changes: &[ReminderChange],
    ) -> Result<(), StoreError> {
        // The form each name has after the call's changes so far (None: gone), where changed.
        let mut changed: HashMap<&str, Option<Form>> = HashMap::new();
        for change in changes {
            match change {
                ReminderChange::Schedule {
                    name,
                    reminder_id,
                    due_at,
                    ..
                } => {
                    let form = (*reminder_id, stored(*due_at), ReminderState::Scheduled);
                    changed.insert(name, Some(form));
                }
                ReminderChange::Cancel { name } => {
                    changed.insert(name, None);
                }
                ReminderChange::Fired {
                    name,
                    reminder_id,
                    due_at,
                    next_due_at,
                    error,
                    ..
                } => {
                    let current = match changed.get(name.as_str()) {
                        Some(form) => *form,
                        None => self
                            .by_stream
                            .get(stream)
                            .and_then(|named| named.get(name))
                            .map(|r| (r.reminder_id, r.due_at, r.state)),
                    };
                    let due_at = stored(*due_at);
                    if current != Some((*reminder_id, due_at, ReminderState::Scheduled)) {
                        return Err(StoreError::StaleFiring {
                            stream: stream.clone(),
                            name: name.clone(),
                        });
                    }
                    let after = match (next_due_at, error) {
                        (Some(next), _) => {
                            Some((*reminder_id, stored(*next), ReminderState::Scheduled))
                        }
                        (None, None) => None,
                        (None, Some(_)) => Some((*reminder_id, due_at, ReminderState::Rejected)),
                    };
                    changed.insert(name, after);
                }
            }
        }
        Ok(())
    }

    /// Applies `changes` to `stream`'s reminders, in order (checked first: [`check`](Self::check)).
    pub(super) fn apply(&mut self, stream: &StreamId, changes: Vec<ReminderChange>) {
        for change in changes {
            self.apply_one(stream, change);
        }
        if self.by_stream.get(stream).is_some_and(BTreeMap::is_empty) {
            self.by_stream.remove(stream);
        }
    }

    fn apply_one(&mut self, stream: &StreamId, change: ReminderChange) {
        match change {
            ReminderChange::Schedule {
                name,
                reminder_id,
                due_at,
                period_ms,
                payload,
            } => {
                self.remove(stream, &name);
                let reminder = StoredReminder {
                    stream: stream.clone(),
                    name: name.clone(),
                    reminder_id,
                    shard: 0,
                    due_at: stored(due_at),
                    period_ms,
                    payload,
                    state: ReminderState::Scheduled,
                    last_error: None,
                    last_fired_at: None,
                };
                self.insert(reminder);
            }
            ReminderChange::Cancel { name } => {
                self.remove(stream, &name);
            }
            ReminderChange::Fired {
                name,
                reminder_id,
                fired_at,
                next_due_at,
                error,
                ..
            } => {
                let current = self
                    .by_stream
                    .get(stream)
                    .and_then(|named| named.get(&name))
                    .is_some_and(|r| r.reminder_id == reminder_id);
                if !current {
                    return;
                }
                let Some(mut reminder) = self.remove(stream, &name) else {
                    return;
                };
                reminder.last_fired_at = Some(stored(fired_at));
                match (next_due_at, error) {
                    (Some(next), error) => {
                        reminder.due_at = stored(next);
                        reminder.last_error = error;
                    }
                    (None, None) => return,
                    (None, Some(error)) => {
                        reminder.state = ReminderState::Rejected;
                        reminder.last_error = Some(error);
                    }
                }
                self.insert(reminder);
            }
        }
    }

    /// Stores `reminder` (none of its name may be stored) and indexes it if it is scheduled.
    fn insert(&mut self, reminder: StoredReminder) {
        if reminder.state == ReminderState::Scheduled {
            self.due.insert((
                reminder.due_at,
                reminder.stream.clone(),
                reminder.name.clone(),
            ));
        }
        self.by_stream
            .entry(reminder.stream.clone())
            .or_default()
            .insert(reminder.name.clone(), reminder);
    }

    /// Removes the reminder `name` of `stream`, and its index entry.
    fn remove(&mut self, stream: &StreamId, name: &str) -> Option<StoredReminder> {
        let reminder = self.by_stream.get_mut(stream)?.remove(name)?;
        self.due.remove(&(
            reminder.due_at,
            reminder.stream.clone(),
            reminder.name.clone(),
        ));
        Some(reminder)
    }

    /// The reminders of `stream`, by name.
    pub(super) fn of(&self, stream: &StreamId) -> Vec<StoredReminder> {
        self.by_stream
            .get(stream)
            .map(|named| named.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The scheduled reminders `query` asks for, earliest first, without those it skips.
    pub(super) fn due(&self, query: &DueReminders) -> Vec<StoredReminder> {
        let skip: HashSet<Uuid> = query.skip.iter().copied().collect();
        self.due
            .iter()
            .take_while(|(due_at, _, _)| *due_at <= query.due_by)
            .filter_map(|(_, stream, name)| self.by_stream.get(stream)?.get(name))
            .filter(|r| {
                query
                    .shards
                    .as_ref()
                    .is_none_or(|shards| shards.contains(&r.shard))
                    && !skip.contains(&r.reminder_id)
            })
            .take(query.limit)
            .cloned()
            .collect()
    }
}
