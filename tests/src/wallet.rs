//! `Wallet`: the aggregate the reliability tests drive.
//!
//! Every event carries the id of the command that produced it (and, for multi-event commands,
//! its part number and the number of parts), so a test can find each acknowledged command in
//! the store, see that it is there exactly once, and see that a multi-event command was stored
//! whole or not at all. Withdrawals are refused when the balance is short, so a decision taken
//! on stale state (after a lost race) would show up as a negative balance in the stored
//! history. The digest depends on the order of events, so two states are equal only if the same
//! events were applied in the same order.

use aggregate_actors::{Aggregate, Context};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The aggregate.
pub struct Wallet;

/// What callers ask a wallet to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WalletCommand {
    /// Adds `amount` (one event).
    Deposit {
        /// Unique id of this command, stored in its event.
        command: Uuid,
        /// Amount added.
        amount: i64,
    },
    /// Adds several amounts in one command: one event each, appended atomically.
    Split {
        /// Unique id of this command, stored in each of its events.
        command: Uuid,
        /// Amounts added, one event each.
        amounts: Vec<i64>,
    },
    /// Takes `amount` away; refused when the balance is smaller.
    Withdraw {
        /// Unique id of this command.
        command: Uuid,
        /// Amount taken.
        amount: i64,
    },
    /// Stores a memo of any size (for oversized-payload tests).
    Memo {
        /// Unique id of this command.
        command: Uuid,
        /// The memo.
        text: String,
    },
    /// One memo event per text, appended atomically (for too-many-events and
    /// one-oversized-event-among-many tests).
    Memos {
        /// Unique id of this command.
        command: Uuid,
        /// The texts.
        texts: Vec<String>,
    },
    /// `decide` panics.
    PanicInDecide,
    /// `decide` emits a deposit and a poison event whose `apply` panics.
    PanicInApply {
        /// Unique id of this command.
        command: Uuid,
    },
}

impl WalletCommand {
    /// A deposit with a fresh command id.
    pub fn deposit(amount: i64) -> Self {
        WalletCommand::Deposit {
            command: Uuid::now_v7(),
            amount,
        }
    }

    /// A withdrawal with a fresh command id.
    pub fn withdraw(amount: i64) -> Self {
        WalletCommand::Withdraw {
            command: Uuid::now_v7(),
            amount,
        }
    }

    /// A split deposit with a fresh command id.
    pub fn split(amounts: Vec<i64>) -> Self {
        WalletCommand::Split {
            command: Uuid::now_v7(),
            amounts,
        }
    }

    /// The command's id, if it has one.
    pub fn id(&self) -> Option<Uuid> {
        match self {
            WalletCommand::Deposit { command, .. }
            | WalletCommand::Split { command, .. }
            | WalletCommand::Withdraw { command, .. }
            | WalletCommand::Memo { command, .. }
            | WalletCommand::Memos { command, .. }
            | WalletCommand::PanicInApply { command } => Some(*command),
            WalletCommand::PanicInDecide => None,
        }
    }

    /// The balance change the command makes when accepted.
    pub fn net_amount(&self) -> i64 {
        match self {
            WalletCommand::Deposit { amount, .. } => *amount,
            WalletCommand::Split { amounts, .. } => amounts.iter().sum(),
            WalletCommand::Withdraw { amount, .. } => -amount,
            _ => 0,
        }
    }
}

/// What happened to a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletEvent {
    /// Money came in; `part` of `parts` of one command.
    Deposited {
        /// The command that produced it.
        command: Uuid,
        /// Index of this event within its command, from 0.
        part: u32,
        /// Events the command produced.
        parts: u32,
        /// Amount added.
        amount: i64,
    },
    /// Money went out.
    Withdrew {
        /// The command that produced it.
        command: Uuid,
        /// Amount taken.
        amount: i64,
    },
    /// A memo.
    Memoed {
        /// The command that produced it.
        command: Uuid,
        /// Index of this event within its command, from 0.
        part: u32,
        /// Events the command produced.
        parts: u32,
        /// The text.
        text: String,
    },
    /// `apply` panics on this one (never stored: apply runs before the append).
    Poison {
        /// The command that produced it.
        command: Uuid,
    },
}

impl WalletEvent {
    /// The command that produced the event.
    pub fn command(&self) -> Uuid {
        match self {
            WalletEvent::Deposited { command, .. }
            | WalletEvent::Withdrew { command, .. }
            | WalletEvent::Memoed { command, .. }
            | WalletEvent::Poison { command } => *command,
        }
    }

    /// `(part, parts)`: this event's index within its command and the command's event count.
    pub fn part(&self) -> (u32, u32) {
        match self {
            WalletEvent::Deposited { part, parts, .. }
            | WalletEvent::Memoed { part, parts, .. } => (*part, *parts),
            WalletEvent::Withdrew { .. } | WalletEvent::Poison { .. } => (0, 1),
        }
    }

    /// The balance change.
    pub fn amount(&self) -> i64 {
        match self {
            WalletEvent::Deposited { amount, .. } => *amount,
            WalletEvent::Withdrew { amount, .. } => -amount,
            WalletEvent::Memoed { .. } | WalletEvent::Poison { .. } => 0,
        }
    }
}

/// A wallet's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletState {
    /// Current balance.
    pub balance: i64,
    /// Lowest balance ever reached (never negative if every decision saw fresh state).
    pub lowest: i64,
    /// Events applied.
    pub events: u64,
    /// Memos, in order.
    pub memos: Vec<String>,
    /// Order-sensitive digest of every event applied.
    pub digest: u64,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WalletError {
    /// The balance is smaller than the withdrawal.
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds {
        /// Balance at decision time.
        balance: i64,
        /// Amount asked for.
        asked: i64,
    },
}

impl Aggregate for Wallet {
    const TYPE: &'static str = "wallet";
    type Command = WalletCommand;
    type Event = WalletEvent;
    type State = WalletState;
    type Error = WalletError;

    fn decide(
        state: &WalletState,
        command: &WalletCommand,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<WalletEvent>, WalletError> {
        Ok(match command {
            WalletCommand::Deposit { command, amount } => vec![WalletEvent::Deposited {
                command: *command,
                part: 0,
                parts: 1,
                amount: *amount,
            }],
            WalletCommand::Split { command, amounts } => {
                let parts = u32::try_from(amounts.len()).unwrap_or(u32::MAX);
                amounts
                    .iter()
                    .zip(0..)
                    .map(|(&amount, part)| WalletEvent::Deposited {
                        command: *command,
                        part,
                        parts,
                        amount,
                    })
                    .collect()
            }
            WalletCommand::Withdraw { command, amount } => {
                if state.balance < *amount {
                    return Err(WalletError::InsufficientFunds {
                        balance: state.balance,
                        asked: *amount,
                    });
                }
                vec![WalletEvent::Withdrew {
                    command: *command,
                    amount: *amount,
                }]
            }
            WalletCommand::Memo { command, text } => vec![WalletEvent::Memoed {
                command: *command,
                part: 0,
                parts: 1,
                text: text.clone(),
            }],
            WalletCommand::Memos { command, texts } => {
                let parts = u32::try_from(texts.len()).unwrap_or(u32::MAX);
                texts
                    .iter()
                    .zip(0..)
                    .map(|(text, part)| WalletEvent::Memoed {
                        command: *command,
                        part,
                        parts,
                        text: text.clone(),
                    })
                    .collect()
            }
            WalletCommand::PanicInDecide => panic!("decide panicked on purpose"),
            WalletCommand::PanicInApply { command } => vec![
                WalletEvent::Deposited {
                    command: *command,
                    part: 0,
                    parts: 2,
                    amount: 1,
                },
                WalletEvent::Poison { command: *command },
            ],
        })
    }

    fn apply(state: &mut WalletState, event: &WalletEvent) {
        if let WalletEvent::Poison { .. } = event {
            panic!("apply panicked on purpose");
        }
        state.events += 1;
        state.balance += event.amount();
        state.lowest = state.lowest.min(state.balance);
        if let WalletEvent::Memoed { text, .. } = event {
            state.memos.push(text.clone());
        }
        let (high, low) = event.command().as_u64_pair();
        let mix = high ^ low.rotate_left(17) ^ (event.amount() as u64) ^ state.events;
        state.digest = state
            .digest
            .wrapping_mul(0x0000_0100_0000_01B3)
            .wrapping_add(mix);
    }
}

/// The state a sequence of events folds to, computed by the test, not by the framework.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a WalletEvent>) -> WalletState {
    let mut state = WalletState::default();
    for event in events {
        Wallet::apply(&mut state, event);
    }
    state
}
