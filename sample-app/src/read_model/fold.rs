//! The fold: what each event changes in the read model, written once and used by both
//! backends (the in-memory model folds into all of it; PostgreSQL loads the rows a batch
//! touches, folds into them and writes them back).

use std::collections::{BTreeMap, HashMap};

use aggregate_actors::Aggregate;
use aggregate_actors::event_stores::RecordedEvent;
use aggregate_actors::upcast::{self, UpcastError};

use super::CustomerTotals;
use crate::domain::{Account, AccountEvent, Customer, CustomerEvent};

/// A ledger event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    /// An event of an account.
    Account(AccountEvent),
    /// An event of a customer.
    Customer(CustomerEvent),
}

/// A decoded event with where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// The aggregate's id (an account's or a customer's).
    pub id: String,
    /// Its version within the aggregate's stream.
    pub version: u64,
    /// What happened.
    pub event: LedgerEvent,
}

impl Fact {
    /// Decodes `event`, lifted through the aggregate's upcasters if it is older; `None` for an
    /// event of another aggregate type.
    pub fn decode(event: &RecordedEvent) -> Result<Option<Self>, UpcastError> {
        let aggregate_type = event.stream.aggregate_type();
        let decoded = if aggregate_type == Account::TYPE {
            LedgerEvent::Account(upcast::read::<Account>(event)?)
        } else if aggregate_type == Customer::TYPE {
            LedgerEvent::Customer(upcast::read::<Customer>(event)?)
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            id: event.stream.aggregate_id().to_owned(),
            version: event.version,
            event: decoded,
        }))
    }

    /// Decodes a batch, leaving out events of other aggregate types.
    pub fn decode_all(events: &[RecordedEvent]) -> Result<Vec<Self>, UpcastError> {
        events
            .iter()
            .filter_map(|event| Self::decode(event).transpose())
            .collect()
    }

    /// The owner an account's `Opened` event names.
    pub fn opened_for(&self) -> Option<&str> {
        match &self.event {
            LedgerEvent::Account(AccountEvent::Opened { owner, .. }) => Some(owner),
            _ => None,
        }
    }
}

/// An account as the read model knows it: who owns it, and the last version of its stream
/// folded in (the guard that makes folding an event twice a no-op).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEntry {
    /// The owner named when it opened (a customer id).
    pub owner: String,
    /// The last version folded in.
    pub version: u64,
}

/// A customer's row, with the last version of the customer's own stream folded in (0 when
/// the row exists only because the customer owns accounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerEntry {
    /// The row.
    pub totals: CustomerTotals,
    /// The last version of the customer's stream folded in.
    pub version: u64,
}

/// The read model's rows: all of them in memory, or on PostgreSQL those one batch touches.
///
/// Idempotent: an event at or below the last version folded for its stream is skipped, so a
/// batch handed over again (at least once) changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Accounts by id.
    pub accounts: HashMap<String, AccountEntry>,
    /// Customers by id.
    pub customers: BTreeMap<String, CustomerEntry>,
}

impl Totals {
    /// Folds in one event.
    pub fn apply(&mut self, fact: &Fact) {
        match &fact.event {
            LedgerEvent::Customer(event) => self.apply_customer(fact, event),
            LedgerEvent::Account(event) => self.apply_account(fact, event),
        }
    }

    fn customer(&mut self, id: &str) -> &mut CustomerEntry {
        self.customers
            .entry(id.to_owned())
            .or_insert_with(|| CustomerEntry {
                totals: CustomerTotals {
                    customer_id: id.to_owned(),
                    ..CustomerTotals::default()
                },
                version: 0,
            })
    }

    fn apply_customer(&mut self, fact: &Fact, event: &CustomerEvent) {
        let entry = self.customer(&fact.id);
        if fact.version <= entry.version {
            return;
        }
        entry.version = fact.version;
        let totals = &mut entry.totals;
        match event {
            CustomerEvent::Registered { name, .. } => totals.name = Some(name.clone()),
            CustomerEvent::AccountLinked { .. } => totals.linked_accounts += 1,
            CustomerEvent::AddressChanged { .. } | CustomerEvent::Verified { .. } => {}
        }
    }

    fn apply_account(&mut self, fact: &Fact, event: &AccountEvent) {
        let owner = match (self.accounts.get_mut(&fact.id), event) {
            (Some(account), _) if fact.version <= account.version => return,
            (Some(account), _) => {
                account.version = fact.version;
                account.owner.clone()
            }
            (None, AccountEvent::Opened { owner, .. }) => {
                let entry = AccountEntry {
                    owner: owner.clone(),
                    version: fact.version,
                };
                self.accounts.insert(fact.id.clone(), entry);
                owner.clone()
            }
            (None, _) => {
                // Every other command needs an open account, so `Opened` comes first in the
                // stream, and so in the feed: this is a store edited by hand.
                tracing::warn!(account = %fact.id, version = fact.version, "an account event before the account opened; skipped");
                return;
            }
        };
        let totals = &mut self.customer(&owner).totals;
        // `decide` keeps every figure far from overflow; saturating keeps the fold total.
        match event {
            AccountEvent::Opened { .. } => totals.accounts += 1,
            AccountEvent::Deposited { amount_cents, .. } => {
                totals.deposits += 1;
                totals.deposited_cents = totals.deposited_cents.saturating_add(*amount_cents);
                totals.balance_cents = totals.balance_cents.saturating_add(*amount_cents);
            }
            AccountEvent::Withdrew { amount_cents, .. } => {
                totals.withdrawals += 1;
                totals.withdrawn_cents = totals.withdrawn_cents.saturating_add(*amount_cents);
                totals.balance_cents = totals.balance_cents.saturating_sub(*amount_cents);
            }
            AccountEvent::Frozen { .. } => totals.frozen_accounts += 1,
            AccountEvent::Unfrozen { .. } => {
                totals.frozen_accounts = totals.frozen_accounts.saturating_sub(1);
            }
            AccountEvent::Closed { .. } => totals.closed_accounts += 1,
            // A review changes no total: the account stays frozen.
            AccountEvent::ReviewRequested { .. } => {}
        }
    }
}
