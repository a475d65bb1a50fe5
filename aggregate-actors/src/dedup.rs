//! The window of an aggregate's recent commands: which command ids it has applied, and what
//! each stored, so a retried command is answered with its first outcome instead of being
//! decided again.
//!
//! The window is rebuilt on every activation from the events themselves (each carries its
//! command id) and carried in snapshots, so it survives passivation, restarts and moves to
//! another process. It is bounded by a count and an age ([`DedupWindow`]). A retry older than
//! the window is still never applied twice when it writes events: their ids derive from the
//! command id, and the store's unique event id refuses the second copy
//! ([`StoreError::CommandAlreadyApplied`](event_stores::StoreError::CommandAlreadyApplied)).

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How many recent command ids each aggregate remembers, and for how long.
///
/// Defaults: the last 128 commands, no older than one hour (a retry after a lost reply comes
/// within seconds to minutes). Each remembered command costs about 50 bytes of memory and
/// 30 bytes in each snapshot. Beyond the window a retry that writes events is still refused by
/// the store's unique event id and answered as a duplicate; a retry that the aggregate now
/// rejects, or that decides no events, is answered with that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupWindow {
    /// Most commands remembered per aggregate (0 = remember none, rely on the store alone).
    pub max_commands: usize,
    /// Commands recorded this long before the aggregate's newest command are forgotten when it
    /// records its next command or is activated (`None` = count only). An idle aggregate may
    /// answer from its window a little longer, which is harmless: the answer is the original
    /// outcome.
    pub max_age: Option<Duration>,
}

impl Default for DedupWindow {
    fn default() -> Self {
        Self {
            max_commands: 128,
            max_age: Some(Duration::from_secs(3_600)),
        }
    }
}

/// One remembered command: the versions its events took and when they were recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecentCommand {
    pub(crate) id: Uuid,
    pub(crate) first_version: u64,
    pub(crate) last_version: u64,
    /// `recorded_at` of its events, microseconds since the Unix epoch.
    pub(crate) recorded_at: i64,
}

/// The recent commands of one aggregate, oldest first.
///
/// The commands themselves are kept once, in order; the index by id holds only each one's
/// sequence number (4 bytes and a control byte a bucket, against 33 for a map of ids to
/// versions). A command touches the index three times (a look-up, an insert, the removal of the
/// oldest), and with thousands of busy aggregates each of those is a cache miss: a small index
/// misses less. A full default window costs ≈ 6.5 KiB, ≈ 7.7 KiB once the index has doubled to
/// make room past the slots its removals left (the map of ids to versions: ≈ 18.5 KiB, then
/// ≈ 27 KiB).
///
/// Ids hash with foldhash rather than SipHash: they are command ids a caller may choose, but at
/// most `max_commands` of them share an index, which bounds what colliding ids could cost.
#[derive(Debug, Default, Clone)]
pub(crate) struct RecentCommands {
    order: VecDeque<RecentCommand>,
    /// The sequence number of `order`'s front; the command at `order[i]` has `front + i`
    /// (wrapping: at most `max_commands + 1` are kept at once).
    front: u32,
    /// Each remembered id's sequence number; an id recorded twice (only possible with
    /// hand-written events) points at its newer command.
    by_id: HashTable<u32>,
}

/// An id's hash in the index.
fn hash(id: &Uuid) -> u64 {
    foldhash::fast::FixedState::default().hash_one(id)
}

/// The command with sequence number `seq` in `order`, whose front is `front`.
fn at(order: &VecDeque<RecentCommand>, front: u32, seq: u32) -> Option<&RecentCommand> {
    order.get(usize::try_from(seq.wrapping_sub(front)).ok()?)
}

impl RecentCommands {
    /// A window holding `commands` (oldest first), trimmed to `window`.
    pub(crate) fn from_snapshot(commands: Vec<RecentCommand>, window: DedupWindow) -> Self {
        let mut recent = Self::default();
        if window.max_commands == 0 {
            return recent;
        }
        let kept = commands.len().min(window.max_commands);
        // One more: `push` appends before it trims.
        recent.order.reserve_exact(kept + 1);
        recent.by_id.reserve(kept + 1, |_| 0);
        for command in commands {
            recent.push(command, window);
        }
        recent
    }

    /// The versions (first, last) command `id` stored, if it is remembered.
    pub(crate) fn get(&self, id: Uuid) -> Option<(u64, u64)> {
        let (order, front) = (&self.order, self.front);
        let is_id = |&seq: &u32| at(order, front, seq).is_some_and(|command| command.id == id);
        let seq = *self.by_id.find(hash(&id), is_id)?;
        at(order, front, seq).map(|command| (command.first_version, command.last_version))
    }

    /// Remembers an applied command; events replayed in order extend the command they belong
    /// to when it is the newest one.
    pub(crate) fn record(
        &mut self,
        id: Uuid,
        version: u64,
        recorded_at: DateTime<Utc>,
        window: DedupWindow,
    ) {
        if let Some(last) = self.order.back_mut()
            && last.id == id
            && last.last_version + 1 == version
        {
            last.last_version = version;
            return;
        }
        let command = RecentCommand {
            id,
            first_version: version,
            last_version: version,
            recorded_at: recorded_at.timestamp_micros(),
        };
        self.push(command, window);
    }

    /// Remembers a whole command at once (after its append).
    pub(crate) fn record_command(
        &mut self,
        id: Uuid,
        first_version: u64,
        last_version: u64,
        recorded_at: DateTime<Utc>,
        window: DedupWindow,
    ) {
        let command = RecentCommand {
            id,
            first_version,
            last_version,
            recorded_at: recorded_at.timestamp_micros(),
        };
        self.push(command, window);
    }

    fn push(&mut self, command: RecentCommand, window: DedupWindow) {
        if window.max_commands == 0 {
            return;
        }
        let (id, newest) = (command.id, command.recorded_at);
        if self.order.len() == self.order.capacity() {
            // Grow by doubling as usual, but never past the window (a doubling from 128 would
            // reserve room for 256 commands that are never kept).
            let wanted = (self.order.len() * 2)
                .max(4)
                .min(window.max_commands.saturating_add(1));
            self.order
                .reserve_exact(wanted.saturating_sub(self.order.len()).max(1));
        }
        // The window keeps fewer than 2^32 commands (a window that large would need 160 GiB):
        // the sequence number wraps without clashing.
        let seq = self.front.wrapping_add(self.order.len() as u32);
        self.order.push_back(command);
        let (order, front) = (&self.order, self.front);
        let is_id = |&s: &u32| s != seq && at(order, front, s).is_some_and(|c| c.id == id);
        let rehash = |&s: &u32| at(order, front, s).map_or(0, |c| hash(&c.id));
        match self.by_id.entry(hash(&id), is_id, rehash) {
            Entry::Occupied(mut older) => *older.get_mut() = seq,
            Entry::Vacant(vacant) => {
                vacant.insert(seq);
            }
        }
        self.trim(window, newest);
    }

    /// Forgets the commands beyond the window's count, and those recorded more than its age
    /// before `now` (microseconds since the Unix epoch). `now` is the newest command's
    /// `recorded_at`, the store's clock when it was appended, so no clock is read per command;
    /// an aggregate that records nothing new keeps its older ids a little longer, which is
    /// harmless (see [`DedupWindow::max_age`]).
    fn trim(&mut self, window: DedupWindow, now: i64) {
        let cutoff = window
            .max_age
            .and_then(|age| i64::try_from(age.as_micros()).ok())
            .map(|age| now.saturating_sub(age));
        while let Some(oldest) = self.order.front() {
            let too_many = self.order.len() > window.max_commands;
            let too_old = cutoff.is_some_and(|cutoff| oldest.recorded_at < cutoff);
            if !(too_many || too_old) {
                break;
            }
            let (hash, seq) = (hash(&oldest.id), self.front);
            // A command id seen twice (only possible with hand-written events) keeps the
            // newer entry: the index points at that one, not at this sequence number.
            if let Ok(entry) = self.by_id.find_entry(hash, |&s| s == seq) {
                entry.remove();
            }
            self.order.pop_front();
            self.front = self.front.wrapping_add(1);
        }
    }

    /// The remembered commands, oldest first, as a snapshot carries them.
    pub(crate) fn to_vec(&self) -> Vec<RecentCommand> {
        self.order.iter().copied().collect()
    }

    /// How many commands are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn window(max_commands: usize) -> DedupWindow {
        DedupWindow {
            max_commands,
            max_age: Some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn consecutive_events_of_one_command_make_one_entry() {
        let mut recent = RecentCommands::default();
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let now = Utc::now();
        recent.record(a, 1, now, window(8));
        recent.record(a, 2, now, window(8));
        recent.record(b, 3, now, window(8));
        assert_eq!(recent.get(a), Some((1, 2)));
        assert_eq!(recent.get(b), Some((3, 3)));
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn the_oldest_commands_leave_by_count_and_by_age() {
        let mut recent = RecentCommands::default();
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for (version, id) in (1..).zip(&ids) {
            recent.record(*id, version, Utc::now(), window(3));
        }
        assert_eq!(recent.len(), 3);
        assert_eq!(recent.get(ids[1]), None);
        assert_eq!(recent.get(ids[2]), Some((3, 3)));

        let old = Utc::now() - chrono::Duration::seconds(120);
        let stale = Uuid::now_v7();
        let mut aged = RecentCommands::default();
        aged.record_command(stale, 1, 1, old, window(8));
        assert_eq!(aged.get(stale), Some((1, 1)), "the newest command is kept");
        let fresh = Uuid::now_v7();
        aged.record_command(fresh, 2, 2, Utc::now(), window(8));
        assert_eq!(
            aged.get(stale),
            None,
            "older than max_age before the newest is forgotten"
        );
        assert_eq!(aged.get(fresh), Some((2, 2)));
    }

    /// One step of a history: an event replayed (`record`) or a command stored whole.
    #[derive(Debug, Clone)]
    enum Step {
        Event {
            id: usize,
            seconds: i64,
        },
        Command {
            id: usize,
            events: u64,
            seconds: i64,
        },
    }

    /// Ids drawn from a pool of 64, so that ids repeat and the index grows and rehashes.
    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..64usize, 0..3i64).prop_map(|(id, seconds)| Step::Event { id, seconds }),
            (0..64usize, 1..4u64, 0..3i64).prop_map(|(id, events, seconds)| Step::Command {
                id,
                events,
                seconds
            }),
        ]
    }

    /// The window as plainly as it can be said: the commands in order, trimmed by count and by
    /// age before the newest, and an id's answer from its newest remembered command.
    #[derive(Default)]
    struct Model(Vec<RecentCommand>);

    impl Model {
        fn push(&mut self, command: RecentCommand, window: DedupWindow) {
            if window.max_commands == 0 {
                return;
            }
            self.0.push(command);
            let age = window.max_age.map_or(i64::MAX, |a| a.as_micros() as i64);
            while let Some(oldest) = self.0.first() {
                if self.0.len() > window.max_commands
                    || oldest.recorded_at < command.recorded_at.saturating_sub(age)
                {
                    self.0.remove(0);
                } else {
                    break;
                }
            }
        }

        fn record(&mut self, id: Uuid, version: u64, at: i64, window: DedupWindow) {
            if let Some(last) = self.0.last_mut()
                && last.id == id
                && last.last_version + 1 == version
            {
                last.last_version = version;
                return;
            }
            let command = RecentCommand {
                id,
                first_version: version,
                last_version: version,
                recorded_at: at,
            };
            self.push(command, window);
        }

        fn get(&self, id: Uuid) -> Option<(u64, u64)> {
            let newest = self.0.iter().rev().find(|c| c.id == id)?;
            Some((newest.first_version, newest.last_version))
        }
    }

    /// Applies `steps` to both, checking every id's answer and the order after each step.
    fn run(
        steps: &[Step],
        window: DedupWindow,
        recent: &mut RecentCommands,
        model: &mut Model,
        clock: &mut (u64, i64),
    ) -> Result<(), TestCaseError> {
        let ids: Vec<Uuid> = (0..64u128).map(Uuid::from_u128).collect();
        let start = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
        for step in steps {
            let (version, seconds) = clock;
            match *step {
                Step::Event { id, seconds: later } => {
                    *version += 1;
                    *seconds += later;
                    let at = start + chrono::Duration::seconds(*seconds);
                    recent.record(ids[id], *version, at, window);
                    model.record(ids[id], *version, at.timestamp_micros(), window);
                }
                Step::Command {
                    id,
                    events,
                    seconds: later,
                } => {
                    let first = *version + 1;
                    *version += events;
                    *seconds += later;
                    let at = start + chrono::Duration::seconds(*seconds);
                    recent.record_command(ids[id], first, *version, at, window);
                    let command = RecentCommand {
                        id: ids[id],
                        first_version: first,
                        last_version: *version,
                        recorded_at: at.timestamp_micros(),
                    };
                    model.push(command, window);
                }
            }
            for id in &ids {
                prop_assert_eq!(recent.get(*id), model.get(*id), "{:?}", id);
            }
            prop_assert_eq!(recent.to_vec(), model.0.clone());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn the_window_answers_as_a_plain_list_of_its_newest_commands_would(
            steps in proptest::collection::vec(step(), 0..400),
            max_commands in 0..80usize,
            aged in any::<bool>(),
            front in any::<u32>(),
            restore_at in any::<prop::sample::Index>(),
            restored_max in 0..80usize,
        ) {
            let max_age = aged.then(|| Duration::from_secs(20));
            let window = DedupWindow { max_commands, max_age };
            let mut recent = RecentCommands { front, ..RecentCommands::default() };
            let mut model = Model::default();
            let mut clock = (0, 0);
            let split = restore_at.index(steps.len() + 1);
            run(&steps[..split], window, &mut recent, &mut model, &mut clock)?;
            // Passivated and activated again, perhaps with a smaller window: the rest of the
            // history goes on from what the snapshot carried.
            let smaller = DedupWindow { max_commands: restored_max.min(max_commands), max_age };
            let mut recent = RecentCommands::from_snapshot(recent.to_vec(), smaller);
            let mut restored = Model::default();
            for command in model.0 {
                restored.push(command, smaller);
            }
            run(&steps[split..], smaller, &mut recent, &mut restored, &mut clock)?;
        }
    }

    #[test]
    fn a_full_window_keeps_room_for_one_more_command_only() {
        let mut recent = RecentCommands::default();
        let window = DedupWindow::default();
        for version in 1..=1_000 {
            recent.record_command(Uuid::now_v7(), version, version, Utc::now(), window);
        }
        assert_eq!(recent.len(), window.max_commands);
        assert!(recent.order.capacity() <= window.max_commands + 1 + 8);
        let newest = recent.order.back().map(|c| c.id);
        assert_eq!(newest.and_then(|id| recent.get(id)), Some((1_000, 1_000)));
        let oldest = recent.order.front().map(|c| (c.id, c.first_version));
        assert_eq!(oldest.map(|(_, v)| v), Some(1_000 - 127));
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut recent = RecentCommands::default();
        recent.record(Uuid::now_v7(), 1, Utc::now(), window(0));
        assert_eq!(recent.len(), 0);
    }
}
