//! The demo's reminders section: accounts frozen for longer than a (short) review delay get
//! their automatic review, fired by a reminder scheduler; an account unfrozen in time gets none.
//!
//! It runs beside the rest of the demo, on its own executor over the same stores: that executor
//! registers accounts with the short [`ReviewPolicy`] of `--review-frozen-after` and has a
//! [`ReminderScheduler`] next to it. The workload's executor keeps the service's default delay
//! (30 days): its freezes schedule reviews too, but none falls due during the run, so no review
//! lands in the middle of the snapshot-versus-replay comparison. The section's accounts are
//! frozen before the workload starts, and their reviews fire while it runs; [`ReviewDemo::finish`]
//! collects them at the end, so the section adds (almost) nothing to the demo's run time.

use std::fmt::Write as _;
use std::time::Duration;

use aggregate_actors::event_stores::{ReadQuery, ReminderState, StreamId};
use aggregate_actors::scheduler::SchedulerStats;
use aggregate_actors::{Aggregate, BuildError, Executor, upcast};
use chrono::{DateTime, Utc};

use super::table::{Table, duration, int};
use crate::domain::review::REVIEW_REMINDER;
use crate::domain::{Account, AccountCommand, AccountEvent, BoundedText, Dated, ReviewPolicy};
use crate::ledger::Stores;
use crate::scheduler::ReminderScheduler;

/// Accounts frozen and left frozen: each must be reviewed exactly once.
pub const REVIEWED: usize = 4;

/// How long after the last review was due the section waits for the reviews to arrive.
pub const WAIT_BEYOND_DUE: Duration = Duration::from_secs(10);

/// The section while it runs.
pub struct ReviewDemo {
    executor: Executor,
    scheduler: ReminderScheduler,
    policy: ReviewPolicy,
    /// The accounts left frozen, with when they froze and their review was due.
    reviewed: Vec<Frozen>,
    /// The account unfrozen before its review was due.
    cancelled: Option<Cancelled>,
    problems: Vec<String>,
}

impl std::fmt::Debug for ReviewDemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewDemo")
            .field("policy", &self.policy)
            .field("accounts", &self.reviewed.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Frozen {
    id: String,
    frozen_at: DateTime<Utc>,
    due_at: Option<DateTime<Utc>>,
}

/// The account whose freeze was lifted before its review was due.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// Its id.
    pub id: String,
    /// When its review would have been due.
    pub would_be_due: Option<DateTime<Utc>>,
    /// How long after the freeze it was unfrozen.
    pub unfrozen_after: Duration,
    /// Reviews it got (must be none).
    pub reviews: usize,
    /// Reminders it has left (must be none).
    pub reminders_left: usize,
}

/// One account's review, as stored.
#[derive(Debug, Clone)]
pub struct ReviewLine {
    /// The account.
    pub id: String,
    /// When it was frozen.
    pub frozen_at: DateTime<Utc>,
    /// When its review was due (its reminder's due time).
    pub due_at: Option<DateTime<Utc>>,
    /// When the `ReviewRequested` event was stored; `None` if it never came.
    pub reviewed_at: Option<DateTime<Utc>>,
    /// `ReviewRequested` events it has (must be one).
    pub reviews: usize,
    /// Reminders it has left (must be none: a one-shot reminder goes with its firing).
    pub reminders_left: usize,
}

/// What the section saw.
#[derive(Debug, Clone)]
pub struct ReviewReport {
    /// The review delay.
    pub policy: ReviewPolicy,
    /// One line per account left frozen.
    pub reviews: Vec<ReviewLine>,
    /// The account unfrozen in time.
    pub cancelled: Option<Cancelled>,
    /// The scheduler's figures when it stopped.
    pub stats: SchedulerStats,
    /// Anything that went wrong.
    pub problems: Vec<String>,
}

fn account_command(command: AccountCommand) -> Dated<AccountCommand> {
    Dated::now(command)
}

fn text(value: &str) -> Result<BoundedText<64>, String> {
    BoundedText::new(value).map_err(|e| format!("invalid text {value:?}: {e}"))
}

impl ReviewDemo {
    /// Builds the section's executor, opens and freezes one account that is unfrozen at once
    /// (`rev-RUN-00000`) and [`REVIEWED`] more (`rev-RUN-00001` …), then starts its scheduler.
    pub async fn start(
        stores: &Stores,
        run: &str,
        policy: ReviewPolicy,
    ) -> Result<Self, BuildError> {
        let executor = stores.executor_with(Some(policy))?;
        let mut setup = Setup {
            executor: &executor,
            reviewed: Vec::new(),
            cancelled: None,
            problems: Vec::new(),
        };
        let owner = format!("reviews-{run}");
        // The cancelled one first: its review would have been due before all the others.
        let cancelled = format!("rev-{run}-00000");
        match setup.open_and_freeze(&cancelled, &owner).await {
            Ok(frozen) => setup.unfreeze(frozen).await,
            Err(problem) => setup.problems.push(problem),
        }
        for index in 1..=REVIEWED {
            let id = format!("rev-{run}-{index:05}");
            match setup.open_and_freeze(&id, &owner).await {
                Ok(frozen) => setup.reviewed.push(frozen),
                Err(problem) => setup.problems.push(problem),
            }
        }
        let Setup {
            reviewed,
            cancelled,
            problems,
            ..
        } = setup;
        // Started once the cancelled review is gone: a scheduler polling meanwhile could load
        // it (it loads a second ahead) and, at its due time, count it stale, which is right
        // but would make the demo's figures depend on timing.
        let scheduler = ReminderScheduler::start(&executor, ReminderScheduler::eager_settings());
        Ok(Self {
            executor,
            scheduler,
            policy,
            reviewed,
            cancelled,
            problems,
        })
    }
}

/// The section's accounts while [`ReviewDemo::start`] opens and freezes them.
struct Setup<'a> {
    executor: &'a Executor,
    reviewed: Vec<Frozen>,
    cancelled: Option<Cancelled>,
    problems: Vec<String>,
}

impl Setup<'_> {
    async fn open_and_freeze(&self, id: &str, owner: &str) -> Result<Frozen, String> {
        let open = AccountCommand::Open {
            owner: BoundedText::new(owner).map_err(|e| format!("invalid owner: {e}"))?,
        };
        let freeze = AccountCommand::Freeze {
            reason: text("documents expired")?,
        };
        let mut frozen_at = None;
        for command in [open, freeze] {
            let committed = self
                .executor
                .execute::<Account>(id, account_command(command))
                .await
                .map_err(|e| format!("{id}: {e}"))?;
            for event in &committed.events {
                if let AccountEvent::Frozen { at, .. } = event {
                    frozen_at = Some(*at);
                }
            }
        }
        let frozen_at = frozen_at.ok_or_else(|| format!("{id}: the freeze stored no event"))?;
        let reminders = self
            .executor
            .reminders::<Account>(id)
            .await
            .map_err(|e| format!("{id}: cannot list its reminders: {e}"))?;
        let due_at = reminders
            .iter()
            .find(|r| r.name == REVIEW_REMINDER && r.state == ReminderState::Scheduled)
            .map(|r| r.due_at);
        if due_at.is_none() {
            return Err(format!("{id}: the freeze scheduled no review"));
        }
        Ok(Frozen {
            id: id.to_owned(),
            frozen_at,
            due_at,
        })
    }

    async fn unfreeze(&mut self, frozen: Frozen) {
        let unfrozen = self
            .executor
            .execute::<Account>(&frozen.id, account_command(AccountCommand::Unfreeze {}))
            .await;
        match unfrozen {
            Ok(_) => {
                let unfrozen_after = (Utc::now() - frozen.frozen_at).to_std().unwrap_or_default();
                self.cancelled = Some(Cancelled {
                    id: frozen.id,
                    would_be_due: frozen.due_at,
                    unfrozen_after,
                    reviews: 0,
                    reminders_left: 0,
                });
            }
            Err(error) => self.problems.push(format!("{}: {error}", frozen.id)),
        }
    }
}

impl ReviewDemo {
    /// Waits for the reviews (at most [`WAIT_BEYOND_DUE`] after the last was due), checks each
    /// account left frozen was reviewed exactly once and has no reminder left, and the one
    /// unfrozen in time was not reviewed; then stops the scheduler and the executor.
    pub async fn finish(mut self) -> ReviewReport {
        let last_due = self.reviewed.iter().filter_map(|f| f.due_at).max();
        let give_up = last_due.unwrap_or_else(Utc::now)
            + chrono::Duration::from_std(WAIT_BEYOND_DUE).unwrap_or_default();
        let mut reviews = Vec::new();
        loop {
            reviews.clear();
            for frozen in &self.reviewed {
                reviews.push(self.review_of(frozen).await);
            }
            let all_in = reviews.iter().all(|r| r.reviewed_at.is_some());
            if all_in || Utc::now() > give_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for review in &reviews {
            match (review.reviews, review.reminders_left) {
                (1, 0) => {}
                (0, _) => self.problems.push(format!(
                    "{}: no review within {} of its due time",
                    review.id,
                    duration(WAIT_BEYOND_DUE)
                )),
                (n, left) => self.problems.push(format!(
                    "{}: {n} reviews and {left} reminders left (expected 1 and 0)",
                    review.id
                )),
            }
        }
        if let Some(mut cancelled) = self.cancelled.take() {
            let (events, reminders_left) = self.facts(&cancelled.id).await;
            cancelled.reviews = events.iter().filter(|(_, reviewed)| *reviewed).count();
            cancelled.reminders_left = reminders_left;
            if (cancelled.reviews, reminders_left) != (0, 0) {
                self.problems.push(format!(
                    "{}: unfrozen in time but has {} reviews and {reminders_left} reminders",
                    cancelled.id, cancelled.reviews
                ));
            }
            self.cancelled = Some(cancelled);
        }
        let stats = self.scheduler.stop().await;
        self.executor.shutdown().await;
        ReviewReport {
            policy: self.policy,
            reviews,
            cancelled: self.cancelled,
            stats,
            problems: self.problems,
        }
    }

    async fn review_of(&self, frozen: &Frozen) -> ReviewLine {
        let (events, reminders_left) = self.facts(&frozen.id).await;
        let mut reviewed = events.iter().filter(|(_, reviewed)| *reviewed);
        ReviewLine {
            id: frozen.id.clone(),
            frozen_at: frozen.frozen_at,
            due_at: frozen.due_at,
            reviewed_at: reviewed.next().map(|(at, _)| *at),
            reviews: events.iter().filter(|(_, reviewed)| *reviewed).count(),
            reminders_left,
        }
    }

    /// The account's stored events as (recorded at, is a review), and how many reminders it
    /// has; empty when they cannot be read now (the caller looks again).
    async fn facts(&self, id: &str) -> (Vec<(DateTime<Utc>, bool)>, usize) {
        let store = self.executor.event_store();
        let Ok(stream) = StreamId::new(Account::TYPE, id) else {
            return (Vec::new(), 0);
        };
        let events = match store.read_stream(&stream, ReadQuery::all()).await {
            Ok(events) => events
                .iter()
                .map(|event| {
                    let reviewed = matches!(
                        upcast::read::<Account>(event),
                        Ok(AccountEvent::ReviewRequested { .. })
                    );
                    (event.recorded_at, reviewed)
                })
                .collect(),
            Err(error) => {
                tracing::warn!(%error, id, "cannot read the account's events");
                Vec::new()
            }
        };
        let reminders = store.reminders_of(&stream).await.map_or(0, |r| r.len());
        (events, reminders)
    }
}

fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S%.3f").to_string()
}

fn late(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> String {
    match (from, to) {
        (Some(from), Some(to)) => match (to - from).to_std() {
            Ok(late) => duration(late),
            Err(_) => format!("-{}", duration((from - to).to_std().unwrap_or_default())),
        },
        _ => "-".to_owned(),
    }
}

impl ReviewReport {
    /// True when every account left frozen was reviewed exactly once and the one unfrozen in
    /// time was not.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.reviews.len() == REVIEWED && self.cancelled.is_some()
    }

    /// Appends the section to `out`.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nReminders: accounts frozen for {} get a review (a durable reminder per freeze, fired by the scheduler)\n",
            self.policy
        );
        let mut table = Table::new([
            "account",
            "frozen at",
            "review due",
            "reviewed at",
            "late by",
            "reviews",
        ]);
        for r in &self.reviews {
            table.row([
                r.id.clone(),
                clock(r.frozen_at),
                r.due_at.map_or_else(|| "-".to_owned(), clock),
                r.reviewed_at.map_or_else(|| "never".to_owned(), clock),
                late(r.due_at, r.reviewed_at),
                int(r.reviews as u64),
            ]);
        }
        out.push_str(&table.render());
        if let Some(c) = &self.cancelled {
            let _ = writeln!(
                out,
                "{} was unfrozen {} after its freeze: review cancelled{}, reviews {}",
                c.id,
                duration(c.unfrozen_after),
                c.would_be_due.map_or_else(String::new, |due| format!(
                    " (it would have been due {})",
                    clock(due)
                )),
                int(c.reviews as u64),
            );
        }
        let s = &self.stats;
        let _ = writeln!(
            out,
            "scheduler: fired {}, refused {}, stale {}, failed {}, in flight {}; lag after the due time p50 {}, p99 {}, max {}",
            int(s.fired),
            int(s.rejected),
            int(s.stale),
            int(s.failed),
            int(s.in_flight),
            duration(s.lag_p50),
            duration(s.lag_p99),
            duration(s.lag_max),
        );
        for problem in &self.problems {
            let _ = writeln!(out, "  PROBLEM {problem}");
        }
    }
}
