//! Ledger accounts: open, deposit, withdraw (never below zero), freeze, unfreeze, close.
//!
//! The state grows with use (the last [`RECENT_TRANSACTIONS`] transactions, totals per month,
//! counters), so replaying a long history costs real time: this is the aggregate that shows
//! what snapshots buy.

use std::collections::{BTreeMap, VecDeque};

use aggregate_actors::{Aggregate, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::amount::Amount;
use super::dated::Dated;
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
    /// `unfreeze` on an account that is not frozen.
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
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Dated<AccountCommand>;
    type Event = AccountEvent;
    type State = AccountState;
    type Error = AccountError;

    fn decide(
        state: &AccountState,
        command: &Self::Command,
        _ctx: &mut Context<'_, Self>,
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
                AccountEvent::Frozen {
                    reason: reason.to_string(),
                    at,
                }
            }
            AccountCommand::Unfreeze {} => match state.status {
                AccountStatus::Frozen => AccountEvent::Unfrozen { at },
                AccountStatus::Open => return Err(AccountError::NotFrozen),
                AccountStatus::NotOpened => return Err(AccountError::NotOpen),
                AccountStatus::Closed => return Err(AccountError::Closed),
            },
            AccountCommand::Close {} => {
                Self::require_active(state)?;
                if state.balance_cents != 0 {
                    return Err(AccountError::BalanceNotZero {
                        balance_cents: state.balance_cents,
                    });
                }
                AccountEvent::Closed { at }
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
            AccountEvent::Frozen { reason, .. } => {
                state.status = AccountStatus::Frozen;
                state.freeze_reason = Some(reason.clone());
                state.counts.freezes += 1;
            }
            AccountEvent::Unfrozen { .. } => {
                state.status = AccountStatus::Open;
                state.freeze_reason = None;
                state.counts.unfreezes += 1;
            }
            AccountEvent::Closed { at } => {
                state.status = AccountStatus::Closed;
                state.closed_at = Some(*at);
            }
        }
    }

    /// Opening starts an account: a cold account's `Open` appends without reading first.
    fn is_creation(dated: &Dated<AccountCommand>) -> bool {
        matches!(dated.command, AccountCommand::Open { .. })
    }
}
