//! The benchmark domain: a ledger account. The same commands, events and state are used for
//! our framework and (in `scenarios::cqrs`) for cqrs-es, so both do the same work per command.
//!
//! The account state is bounded (balance, counters and the last [`RECENT`] transactions), as a
//! real account aggregate would be: its snapshot stays around a kilobyte however long the
//! history. [`Statement`] is the unbounded variant (every transaction kept) used to measure the
//! codec at several sizes, and [`StatementLedger`] an account whose state also carries its last
//! [`STATEMENT_LINES`] statement lines (about 64 KiB encoded), for snapshot costs of a large
//! state.

use std::borrow::Cow;
use std::collections::VecDeque;

use aggregate_actors::codec;
use aggregate_actors::{Aggregate, Context};
use event_stores::NewEvent;
use serde::{Deserialize, Serialize};

/// Transactions the account state keeps.
pub const RECENT: usize = 16;

/// The ledger account aggregate.
pub struct Ledger;

/// What callers ask of an account. Serializable so that commands can be forwarded to the
/// owning node of a cluster (`register_remote`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LedgerCommand {
    /// Credit an amount.
    Deposit {
        /// Amount in cents.
        amount: u64,
    },
    /// Debit an amount, refused beyond the balance.
    Withdraw {
        /// Amount in cents.
        amount: u64,
    },
    /// Credit `count` deposits of `amount` at once (one command, `count` events).
    Import {
        /// Number of deposits.
        count: u32,
        /// Amount of each.
        amount: u64,
    },
    /// Does nothing (no event): activates the actor and nothing else.
    Touch,
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerEvent {
    /// Money came in.
    Deposited {
        /// Amount in cents.
        amount: u64,
    },
    /// Money went out.
    Withdrew {
        /// Amount in cents.
        amount: u64,
    },
}

/// One recent transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentTransaction {
    /// Its position in the account's history (1, 2, 3 …).
    pub seq: u64,
    /// Signed amount in cents.
    pub amount: i64,
}

/// The account state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Balance in cents.
    pub balance: u64,
    /// Deposits so far.
    pub deposits: u64,
    /// Withdrawals so far.
    pub withdrawals: u64,
    /// The last [`RECENT`] transactions, oldest first.
    pub recent: Vec<RecentTransaction>,
}

impl LedgerState {
    /// Folds one event in (shared by both frameworks).
    pub fn apply(&mut self, event: &LedgerEvent) {
        let amount = match *event {
            LedgerEvent::Deposited { amount } => {
                self.balance += amount;
                self.deposits += 1;
                i64::try_from(amount).unwrap_or(i64::MAX)
            }
            LedgerEvent::Withdrew { amount } => {
                self.balance = self.balance.saturating_sub(amount);
                self.withdrawals += 1;
                -i64::try_from(amount).unwrap_or(i64::MAX)
            }
        };
        if self.recent.len() >= RECENT {
            self.recent.remove(0);
        }
        self.recent.push(RecentTransaction {
            seq: self.deposits + self.withdrawals,
            amount,
        });
    }

    /// Decides a command (shared by both frameworks).
    pub fn decide(&self, command: &LedgerCommand) -> Result<Vec<LedgerEvent>, LedgerError> {
        match *command {
            LedgerCommand::Deposit { amount } => Ok(vec![LedgerEvent::Deposited { amount }]),
            LedgerCommand::Withdraw { amount } if amount > self.balance => {
                Err(LedgerError::InsufficientFunds)
            }
            LedgerCommand::Withdraw { amount } => Ok(vec![LedgerEvent::Withdrew { amount }]),
            LedgerCommand::Import { count, amount } => Ok((0..count)
                .map(|_| LedgerEvent::Deposited { amount })
                .collect()),
            LedgerCommand::Touch => Ok(Vec::new()),
        }
    }
}

/// Why a command was refused (serializable, for answers of forwarded commands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LedgerError {
    /// A withdrawal beyond the balance.
    #[error("insufficient funds")]
    InsufficientFunds,
}

impl Aggregate for Ledger {
    const TYPE: &'static str = "ledger";
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type State = LedgerState;
    type Error = LedgerError;

    fn decide(
        state: &LedgerState,
        command: &LedgerCommand,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<LedgerEvent>, LedgerError> {
        state.decide(command)
    }

    fn apply(state: &mut LedgerState, event: &LedgerEvent) {
        state.apply(event);
    }

    fn event_type(event: &LedgerEvent) -> Cow<'static, str> {
        Cow::Borrowed(match event {
            LedgerEvent::Deposited { .. } => "Deposited",
            LedgerEvent::Withdrew { .. } => "Withdrew",
        })
    }
}

/// The `i`-th deposit of a seeded history (amounts vary so states differ).
pub fn seeded_event(i: u64) -> LedgerEvent {
    LedgerEvent::Deposited {
        amount: 1 + i % 997,
    }
}

/// Encodes an event the way the framework stores it: MessagePack with named fields, the event
/// type name, the aggregate's event schema version and a fresh UUID v7.
///
/// Into a buffer with room for a ledger event from the start, as the framework's reused
/// buffer has: grown from empty (`rmp_serde::to_vec_named`), the baselines that use this paid
/// four reallocations an event (about 1 000 instructions) that the framework does not.
pub fn new_event(event: &LedgerEvent) -> Result<NewEvent, codec::CodecError> {
    let mut payload = Vec::with_capacity(EVENT_ROOM);
    rmp_serde::encode::write_named(&mut payload, event)
        .map_err(|e| codec::CodecError::Encode(e.to_string()))?;
    Ok(NewEvent::new(
        <Ledger as Aggregate>::event_type(event).into_owned(),
        <Ledger as Aggregate>::EVENT_SCHEMA_VERSION,
        payload,
    ))
}

/// Bytes reserved for an encoded ledger event: a deposit or withdrawal is about 30.
const EVENT_ROOM: usize = 64;

/// The kind of a statement line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineKind {
    /// Card payment.
    Card,
    /// Transfer in or out.
    Transfer,
    /// Fee charged.
    Fee,
    /// Interest paid.
    Interest,
}

/// One transaction on a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Transaction id.
    pub id: u64,
    /// Booking time, microseconds since the epoch.
    pub booked_at: i64,
    /// Signed amount in cents.
    pub amount: i64,
    /// Kind.
    pub kind: LineKind,
    /// Counterparty name.
    pub counterparty: String,
    /// Free-text reference.
    pub reference: String,
}

/// An account state that keeps every transaction: the codec sample at several sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// Account number.
    pub account: String,
    /// Currency code.
    pub currency: String,
    /// Balance in cents.
    pub balance: i64,
    /// Every transaction, oldest first.
    pub lines: Vec<StatementLine>,
}

const COUNTERPARTIES: [&str; 8] = [
    "Grocer & Sons",
    "City Transit",
    "Acme Utilities",
    "Payroll Ltd",
    "Corner Café",
    "Online Books",
    "Landlord Property Mgmt",
    "Mobile Carrier",
];

/// A statement with `transactions` lines of deterministic, varied content.
pub fn statement(transactions: usize) -> Statement {
    // A small linear congruential generator: deterministic and dependency-free.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let mut balance = 0i64;
    let mut booked_at = 1_700_000_000_000_000i64;
    let lines = (0..transactions)
        .map(|i| {
            let r = next();
            let kind = match r % 10 {
                0..=5 => LineKind::Card,
                6..=7 => LineKind::Transfer,
                8 => LineKind::Fee,
                _ => LineKind::Interest,
            };
            let magnitude = i64::try_from(next() % 50_000).unwrap_or(0) + 1;
            let amount = match kind {
                LineKind::Card | LineKind::Fee => -magnitude,
                LineKind::Interest => magnitude / 100 + 1,
                LineKind::Transfer if r % 2 == 0 => magnitude * 10,
                LineKind::Transfer => -magnitude,
            };
            balance += amount;
            booked_at += i64::try_from(next() % 86_400_000_000).unwrap_or(0);
            let counterparty = COUNTERPARTIES[(r as usize / 10) % COUNTERPARTIES.len()];
            StatementLine {
                id: i as u64 + 1,
                booked_at,
                amount,
                kind,
                counterparty: counterparty.to_owned(),
                reference: format!("REF-{:08X}", next()),
            }
        })
        .collect();
    Statement {
        account: "GB29 NWBK 6016 1331 9268 19".to_owned(),
        currency: "EUR".to_owned(),
        balance,
        lines,
    }
}

/// Statement lines a [`StatementLedger`] state keeps: about 64 KiB encoded.
pub const STATEMENT_LINES: usize = 668;

/// The ledger account with a large state: the same commands and events as [`Ledger`], and a
/// state that also carries the last [`STATEMENT_LINES`] statement lines.
pub struct StatementLedger;

/// The state of a [`StatementLedger`]: the account and its recent statement lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementState {
    /// The account (as [`Ledger`]'s state).
    pub account: LedgerState,
    /// The last [`STATEMENT_LINES`] lines, oldest first.
    pub lines: VecDeque<StatementLine>,
}

impl Default for StatementState {
    /// An account whose statement is already full, so every snapshot has the same size.
    fn default() -> Self {
        Self {
            account: LedgerState::default(),
            lines: statement(STATEMENT_LINES).lines.into(),
        }
    }
}

impl StatementState {
    fn apply(&mut self, event: &LedgerEvent) {
        self.account.apply(event);
        let (amount, kind) = match *event {
            LedgerEvent::Deposited { amount } => (
                i64::try_from(amount).unwrap_or(i64::MAX),
                LineKind::Transfer,
            ),
            LedgerEvent::Withdrew { amount } => {
                (-i64::try_from(amount).unwrap_or(i64::MAX), LineKind::Card)
            }
        };
        let seq = self.account.deposits + self.account.withdrawals;
        let booked_at = self.lines.back().map_or(0, |l| l.booked_at) + 1_000_000;
        if self.lines.len() >= STATEMENT_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(StatementLine {
            id: seq,
            booked_at,
            amount,
            kind,
            counterparty: COUNTERPARTIES[seq as usize % COUNTERPARTIES.len()].to_owned(),
            reference: format!("REF-{seq:08X}"),
        });
    }
}

impl Aggregate for StatementLedger {
    const TYPE: &'static str = "statement-ledger";
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type State = StatementState;
    type Error = LedgerError;

    fn decide(
        state: &StatementState,
        command: &LedgerCommand,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<LedgerEvent>, LedgerError> {
        state.account.decide(command)
    }

    fn apply(state: &mut StatementState, event: &LedgerEvent) {
        state.apply(event);
    }

    fn event_type(event: &LedgerEvent) -> Cow<'static, str> {
        <Ledger as Aggregate>::event_type(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_keeps_only_recent_transactions() {
        let mut state = LedgerState::default();
        for i in 0..100 {
            state.apply(&seeded_event(i));
        }
        assert_eq!(state.deposits, 100);
        assert_eq!(state.recent.len(), RECENT);
        assert_eq!(
            state.decide(&LedgerCommand::Withdraw { amount: u64::MAX }),
            Err(LedgerError::InsufficientFunds)
        );
        assert_eq!(
            state
                .decide(&LedgerCommand::Import {
                    count: 3,
                    amount: 1
                })
                .map(|e| e.len()),
            Ok(3)
        );
    }

    #[test]
    fn the_statement_ledger_state_is_about_64_kib_and_stays_so() -> Result<(), codec::CodecError> {
        let mut state = StatementState::default();
        let size = codec::encode(&state)?.len();
        assert!((60 * 1024..=68 * 1024).contains(&size), "{size} bytes");
        for i in 0..1_000 {
            state.apply(&seeded_event(i));
        }
        assert_eq!(state.lines.len(), STATEMENT_LINES);
        let size = codec::encode(&state)?.len();
        assert!((56 * 1024..=72 * 1024).contains(&size), "{size} bytes");
        Ok(())
    }

    #[test]
    fn statements_have_the_requested_size_and_are_deterministic() {
        assert_eq!(statement(10).lines.len(), 10);
        assert_eq!(statement(50), statement(50));
    }
}
