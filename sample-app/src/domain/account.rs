//! Ledger accounts: open, deposit, withdraw (never below zero), freeze, unfreeze, close, and
//! the automatic review of accounts frozen for too long.
//!
//! The state grows with use (the last [`RECENT_TRANSACTIONS`] transactions, totals per month,
//! counters), so replaying a long history costs real time: this is the aggregate that shows
//! what snapshots buy.
//!
//! **Reviews.** When a [`ReviewPolicy`] is registered with the type (as the service does), a
//! freeze schedules a durable reminder, [`REVIEW_REMINDER`], that sends the account
//! [`AccountCommand::Review`] once it has been frozen for [`ReviewPolicy::after`]. The
//! reminder is stored with the `Frozen` event, in the same transaction; `unfreeze` and `close`
//! cancel it the same way. A review of an account that is still frozen records
//! [`AccountEvent::ReviewRequested`]; otherwise it is refused ([`AccountError::NotFrozen`]),
//! and the reminder machinery records the refusal on the reminder instead of retrying.

use std::collections::{BTreeMap, VecDeque};

use aggregate_actors::reminder::Reminder;
use aggregate_actors::{Aggregate, Context};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use super::amount::Amount;
use super::dated::Dated;
use super::review::{REVIEW_REMINDER, ReviewPolicy};
use super::text::BoundedText;

/// How many recent transactions an account keeps in its state.
pub const RECENT_TRANSACTIONS: usize = 50;

/// The most an account may hold, in cents (10 000 000 000.00): keeps sums far from overflow.
pub const MAX_BALANCE_CENTS: u64 = 1_000_000_000_000;

/// Who owns an account (a customer id, usually): 1..=128 bytes.
pub type Owner = BoundedText<128>;

/// A booking reference or a reason: 1..=64 bytes.
pub type Reference = BoundedText<64>;

/// What callers ask an account to do. As JSON: `{"type": "deposit", "amount_cents": 500,
/// "reference": "salary"}`; unknown fields are refused, so a typo is an error, not a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AccountCommand {
    /// Opens the account. Overdrafts are never allowed.
    Open {
        /// The owner.
        owner: Owner,
    },
    /// Credits money.
    Deposit {
        /// How much.
        amount_cents: Amount,
        /// The booking reference.
        reference: Reference,
    },
    /// Debits money; refused if the balance would go below zero.
    Withdraw {
        /// How much.
        amount_cents: Amount,
        /// The booking reference.
        reference: Reference,
    },
    /// Stops all transactions until unfrozen.
    Freeze {
        /// Why.
        reason: Reference,
    },
    /// Lifts a freeze. (A struct variant with no fields rather than a unit variant: serde
    /// ignores unknown fields next to the tag of a unit variant, even with
    /// `deny_unknown_fields`.)
    Unfreeze {},
    /// Closes the account for good; only at a zero balance.
    Close {},
    /// Asks for a review of a frozen account (`{"type":"review"}`); refused unless the account
    /// is frozen. The review reminder of a freeze sends it; a caller may send it too.
    Review {},
}

/// What happened to an account. Plain data: every value was validated before it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened.
    Opened {
        /// The owner.
        owner: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Money was credited.
    Deposited {
        /// How much.
        amount_cents: u64,
        /// The booking reference.
        reference: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Money was debited.
    Withdrew {
        /// How much.
        amount_cents: u64,
        /// The booking reference.
        reference: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The account was frozen.
    Frozen {
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The freeze was lifted.
    Unfrozen {
        /// When.
        at: DateTime<Utc>,
    },
    /// The account was closed.
    Closed {
        /// When.
        at: DateTime<Utc>,
    },
    /// A frozen account was put up for review (added after the others: older streams simply
    /// do not contain it).
    ReviewRequested {
        /// When the freeze began.
        frozen_since: DateTime<Utc>,
        /// When the review was asked for: for a review sent by the reminder, the instant it
        /// was due.
        at: DateTime<Utc>,
    },
}

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// No `Opened` event yet.
    #[default]
    NotOpened,
    /// Takes transactions.
    Open,
    /// Takes no transactions until unfrozen.
    Frozen,
    /// Closed for good.
    Closed,
}

/// Credit or debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Money in.
    Credit,
    /// Money out.
    Debit,
}

/// One booked transaction, as kept in the recent list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Credit or debit.
    pub direction: Direction,
    /// How much.
    pub amount_cents: u64,
    /// The booking reference.
    pub reference: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The balance right after it.
    pub balance_after_cents: u64,
}

/// Sums of one calendar month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyTotals {
    /// Money in.
    pub credits_cents: u64,
    /// Money out.
    pub debits_cents: u64,
    /// Transactions booked.
    pub transactions: u64,
}

/// How often each thing happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCounts {
    /// Deposits.
    pub deposits: u64,
    /// Withdrawals.
    pub withdrawals: u64,
    /// Freezes.
    pub freezes: u64,
    /// Unfreezes.
    pub unfreezes: u64,
    /// Reviews requested.
    #[serde(default)]
    pub reviews: u64,
}

/// Everything an account knows, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Where it is in its life.
    pub status: AccountStatus,
    /// The owner (empty before opening).
    pub owner: String,
    /// The balance; never negative, so unsigned.
    pub balance_cents: u64,
    /// When it was opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Why it is frozen, while it is.
    pub freeze_reason: Option<String>,
    /// Since when it is frozen, while it is.
    #[serde(default)]
    pub frozen_since: Option<DateTime<Utc>>,
    /// The last [`RECENT_TRANSACTIONS`] transactions, oldest first.
    pub recent: VecDeque<Transaction>,
    /// Totals per calendar month, keyed `"YYYY-MM"` (sorted, so the JSON reads in order).
    pub monthly: BTreeMap<String, MonthlyTotals>,
    /// Counters.
    pub counts: AccountCounts,
    /// Everything ever credited.
    pub total_credited_cents: u64,
    /// Everything ever debited.
    pub total_debited_cents: u64,
}

impl AccountState {
    fn book(
        &mut self,
        direction: Direction,
        amount_cents: u64,
        reference: &str,
        at: DateTime<Utc>,
    ) {
        // `decide` guarantees these cannot overflow or go negative; saturating arithmetic
        // keeps `apply` total even for a hand-edited event stream.
        let month = self
            .monthly
            .entry(at.format("%Y-%m").to_string())
            .or_default();
        month.transactions += 1;
        match direction {
            Direction::Credit => {
                self.balance_cents = self.balance_cents.saturating_add(amount_cents);
                self.total_credited_cents = self.total_credited_cents.saturating_add(amount_cents);
                self.counts.deposits += 1;
                month.credits_cents = month.credits_cents.saturating_add(amount_cents);
            }
            Direction::Debit => {
                self.balance_cents = self.balance_cents.saturating_sub(amount_cents);
                self.total_debited_cents = self.total_debited_cents.saturating_add(amount_cents);
                self.counts.withdrawals += 1;
                month.debits_cents = month.debits_cents.saturating_add(amount_cents);
            }
        }
        if self.recent.len() == RECENT_TRANSACTIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(Transaction {
            direction,
            amount_cents,
            reference: reference.to_owned(),
            at,
            balance_after_cents: self.balance_cents,
        });
    }
}

/// Why an account refused a command.
///
/// Serializable, so that a rejection travels back from the node that owns the aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AccountError {
    /// `open` on an account that exists.
    #[error("the account is already open")]
    AlreadyOpen,
    /// Anything but `open` on an account that was never opened.
    #[error("the account has not been opened")]
    NotOpen,
    /// Anything on a closed account.
    #[error("the account is closed")]
    Closed,
    /// A transaction (or a second freeze) on a frozen account.
    #[error("the account is frozen")]
    Frozen,
    /// `unfreeze` or `review` on an account that is not frozen.
    #[error("the account is not frozen")]
    NotFrozen,
    /// A withdrawal larger than the balance: overdrafts are not allowed.
    #[error("insufficient funds: balance {balance_cents} cents, requested {requested_cents}")]
    InsufficientFunds {
        /// The balance.
        balance_cents: u64,
        /// The amount asked for.
        requested_cents: u64,
    },
    /// A deposit that would take the balance above [`MAX_BALANCE_CENTS`].
    #[error("balance limit: {balance_cents} + {amount_cents} cents exceeds {MAX_BALANCE_CENTS}")]
    BalanceLimit {
        /// The balance.
        balance_cents: u64,
        /// The amount deposited.
        amount_cents: u64,
    },
    /// `close` with money left on the account.
    #[error("the balance must be zero to close, it is {balance_cents} cents")]
    BalanceNotZero {
        /// The balance.
        balance_cents: u64,
    },
}

impl AccountError {
    /// A stable, machine-readable name of the rule that was broken (used in HTTP errors).
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::AlreadyOpen => "already_open",
            AccountError::NotOpen => "not_open",
            AccountError::Closed => "closed",
            AccountError::Frozen => "frozen",
            AccountError::NotFrozen => "not_frozen",
            AccountError::InsufficientFunds { .. } => "insufficient_funds",
            AccountError::BalanceLimit { .. } => "balance_limit",
            AccountError::BalanceNotZero { .. } => "balance_not_zero",
        }
    }
}

/// The ledger account aggregate.
#[derive(Debug)]
pub struct Account;

impl Account {
    /// Refuses transactions unless the account is open and not frozen.
    fn require_active(state: &AccountState) -> Result<(), AccountError> {
        match state.status {
            AccountStatus::Open => Ok(()),
            AccountStatus::NotOpened => Err(AccountError::NotOpen),
            AccountStatus::Frozen => Err(AccountError::Frozen),
            AccountStatus::Closed => Err(AccountError::Closed),
        }
    }

    /// Refuses unless the account is frozen.
    fn require_frozen(state: &AccountState) -> Result<(), AccountError> {
        match state.status {
            AccountStatus::Frozen => Ok(()),
            AccountStatus::Open => Err(AccountError::NotFrozen),
            AccountStatus::NotOpened => Err(AccountError::NotOpen),
            AccountStatus::Closed => Err(AccountError::Closed),
        }
    }

    /// With a [`ReviewPolicy`] registered, schedules the freeze's review, `policy.after` from
    /// now; without one, reviews are off and nothing is scheduled.
    ///
    /// The due time counts from [`Context::now`], the aggregate type's clock, and not from the
    /// command's own `at`: a reminder is a wake-up on the wall clock the scheduler compares due
    /// times with, while `at` is the instant the caller says the command was issued at. The demo
    /// replays a simulated year of bookings with `at` in the past; a command that waited in a
    /// mailbox carries an older instant, and one forwarded in a cluster the clock of the node
    /// that received it. Counting from `at` would make such reviews due at once (or early), not
    /// `after` the freeze was stored. `now` stays reproducible where it matters: the test kit
    /// gives `decide` a manual clock.
    fn schedule_review(ctx: &mut Context<'_, Self>) {
        let Some(policy) = ctx.service::<ReviewPolicy>() else {
            return;
        };
        // Stores keep reminder times to the microsecond: truncated here, the due time the
        // reminder lists and the one its command carries are the same instant.
        let due_at = (ctx.now() + policy.after).trunc_subsecs(6);
        // The stored command carries the due time as its instant, so the `ReviewRequested`
        // it records says when the review was due, whenever the reminder actually fires.
        let review = Dated::at(AccountCommand::Review {}, due_at);
        ctx.schedule_reminder(Reminder::at(REVIEW_REMINDER, due_at, review));
    }

    /// Cancels a scheduled review (nothing if there is none), when reviews are on.
    fn cancel_review(ctx: &mut Context<'_, Self>) {
        if ctx.service::<ReviewPolicy>().is_some() {
            ctx.cancel_reminder(REVIEW_REMINDER);
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    /// 2 since the state keeps `frozen_since`: a snapshot of a frozen account taken before
    /// would lack it, so older snapshots are skipped and the state is rebuilt from events.
    const STATE_SCHEMA_VERSION: u32 = 2;
    type Command = Dated<AccountCommand>;
    type Event = AccountEvent;
    type State = AccountState;
    type Error = AccountError;

    fn decide(
        state: &AccountState,
        command: &Self::Command,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        let at = command.at;
        let event = match &command.command {
            AccountCommand::Open { owner } => {
                if state.status != AccountStatus::NotOpened {
                    return Err(AccountError::AlreadyOpen);
                }
                AccountEvent::Opened {
                    owner: owner.to_string(),
                    at,
                }
            }
            AccountCommand::Deposit {
                amount_cents,
                reference,
            } => {
                Self::require_active(state)?;
                let amount_cents = amount_cents.cents();
                if state.balance_cents + amount_cents > MAX_BALANCE_CENTS {
                    return Err(AccountError::BalanceLimit {
                        balance_cents: state.balance_cents,
                        amount_cents,
                    });
                }
                AccountEvent::Deposited {
                    amount_cents,
                    reference: reference.to_string(),
                    at,
                }
            }
            AccountCommand::Withdraw {
                amount_cents,
                reference,
            } => {
                Self::require_active(state)?;
                let amount_cents = amount_cents.cents();
                if amount_cents > state.balance_cents {
                    return Err(AccountError::InsufficientFunds {
                        balance_cents: state.balance_cents,
                        requested_cents: amount_cents,
                    });
                }
                AccountEvent::Withdrew {
                    amount_cents,
                    reference: reference.to_string(),
                    at,
                }
            }
            AccountCommand::Freeze { reason } => {
                Self::require_active(state)?;
                Self::schedule_review(ctx);
                AccountEvent::Frozen {
                    reason: reason.to_string(),
                    at,
                }
            }
            AccountCommand::Unfreeze {} => {
                Self::require_frozen(state)?;
                Self::cancel_review(ctx);
                AccountEvent::Unfrozen { at }
            }
            AccountCommand::Close {} => {
                Self::require_active(state)?;
                if state.balance_cents != 0 {
                    return Err(AccountError::BalanceNotZero {
                        balance_cents: state.balance_cents,
                    });
                }
                // Only an open account closes, so its review was cancelled when it was
                // unfrozen; this also removes a review kept as refused, if there is one.
                Self::cancel_review(ctx);
                AccountEvent::Closed { at }
            }
            AccountCommand::Review {} => {
                Self::require_frozen(state)?;
                AccountEvent::ReviewRequested {
                    // Always set while frozen; a hand-edited stream falls back to the review.
                    frozen_since: state.frozen_since.unwrap_or(at),
                    at,
                }
            }
        };
        Ok(vec![event])
    }

    fn apply(state: &mut AccountState, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner, at } => {
                state.status = AccountStatus::Open;
                state.owner.clone_from(owner);
                state.opened_at = Some(*at);
            }
            AccountEvent::Deposited {
                amount_cents,
                reference,
                at,
            } => state.book(Direction::Credit, *amount_cents, reference, *at),
            AccountEvent::Withdrew {
                amount_cents,
                reference,
                at,
            } => state.book(Direction::Debit, *amount_cents, reference, *at),
            AccountEvent::Frozen { reason, at } => {
                state.status = AccountStatus::Frozen;
                state.freeze_reason = Some(reason.clone());
                state.frozen_since = Some(*at);
                state.counts.freezes += 1;
            }
            AccountEvent::Unfrozen { .. } => {
                state.status = AccountStatus::Open;
                state.freeze_reason = None;
                state.frozen_since = None;
                state.counts.unfreezes += 1;
            }
            AccountEvent::Closed { at } => {
                state.status = AccountStatus::Closed;
                state.closed_at = Some(*at);
            }
            AccountEvent::ReviewRequested { .. } => state.counts.reviews += 1,
        }
    }

    /// Opening starts an account: a cold account's `Open` appends without reading first.
    fn is_creation(dated: &Dated<AccountCommand>) -> bool {
        matches!(dated.command, AccountCommand::Open { .. })
    }
}
