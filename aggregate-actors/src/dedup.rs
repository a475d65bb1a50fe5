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

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How many recent command ids each aggregate remembers, and for how long.
///
/// Defaults: the last 128 commands, no older than one hour (a retry after a lost reply comes
/// within seconds to minutes). Each remembered command costs about 80 bytes of memory and
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
/// Looked up on every command, so the map hashes with foldhash rather than SipHash: the keys
/// are command ids a caller may choose, but at most `max_commands` of them share a map, which
/// bounds what colliding ids could cost.
#[derive(Debug, Default, Clone)]
pub(crate) struct RecentCommands {
    order: VecDeque<RecentCommand>,
    by_id: HashMap<Uuid, (u64, u64), foldhash::fast::FixedState>,
}

impl RecentCommands {
    /// A window holding `commands` (oldest first), trimmed to `window`.
    pub(crate) fn from_snapshot(commands: Vec<RecentCommand>, window: DedupWindow) -> Self {
        let mut recent = Self::default();
        let kept = commands.len().min(window.max_commands);
        recent.by_id.reserve(kept);
        // One more: `push` appends before it trims.
        recent.order.reserve(kept + 1);
        for command in commands {
            recent.push(command, window);
        }
        recent
    }

    /// The versions (first, last) command `id` stored, if it is remembered.
    pub(crate) fn get(&self, id: Uuid) -> Option<(u64, u64)> {
        self.by_id.get(&id).copied()
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
            self.by_id.insert(id, (last.first_version, version));
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
        let newest = command.recorded_at;
        self.by_id
            .insert(command.id, (command.first_version, command.last_version));
        self.order.push_back(command);
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
            let (id, first) = (oldest.id, oldest.first_version);
            self.order.pop_front();
            // A command id seen twice (only possible with hand-written events) keeps the
            // newer entry.
            if self.by_id.get(&id).is_some_and(|&(f, _)| f == first) {
                self.by_id.remove(&id);
            }
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

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut recent = RecentCommands::default();
        recent.record(Uuid::now_v7(), 1, Utc::now(), window(0));
        assert_eq!(recent.len(), 0);
    }
}
