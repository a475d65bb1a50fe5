//! The demo's workload: a deterministic (seeded) plan of realistic ledger traffic.
//!
//! Customers register and accounts open first, then accounts are linked to their owners, then
//! a random mix of deposits, withdrawals, freezes, address changes and so on runs. Account
//! traffic is skewed (account `i` is picked with density ∝ i^(-2/3)): a few hot accounts gather
//! hundreds of events, as real ledgers do, and those are the ones snapshots help most. Some
//! commands are refused by design (overdrafts, closing non-empty accounts, unfreezing open
//! ones, linking twice): rejected commands store nothing.

use std::collections::VecDeque;

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::account::Reference;
use crate::domain::amount::AmountError;
use crate::domain::customer::{AddressInput, CountryCode, CountryCodeError, Email, EmailError};
use crate::domain::text::TextError;
use crate::domain::{AccountCommand, Amount, BoundedText, CustomerCommand};

/// A value the plan built was refused by the domain's own checks: a bug in the plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An amount out of range.
    #[error("planned amount: {0}")]
    Amount(#[from] AmountError),
    /// A text out of range.
    #[error("planned text: {0}")]
    Text(#[from] TextError),
    /// A bad e-mail address.
    #[error("planned e-mail: {0}")]
    Email(#[from] EmailError),
    /// A bad country code.
    #[error("planned country: {0}")]
    Country(#[from] CountryCodeError),
}

/// The aggregate ids of one demo run. The run id keeps runs apart when several use the same
/// PostgreSQL database.
#[derive(Debug, Clone)]
pub struct Ids {
    run: String,
    /// Number of accounts.
    pub accounts: usize,
    /// Number of customers.
    pub customers: usize,
}

impl Ids {
    /// Ids for `accounts` accounts and half as many customers (each owns two accounts).
    pub fn new(run: impl Into<String>, accounts: usize) -> Self {
        Self {
            run: run.into(),
            accounts,
            customers: accounts.div_ceil(2),
        }
    }

    /// The run id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Id of account `index`.
    pub fn account(&self, index: usize) -> String {
        format!("acc-{}-{index:05}", self.run)
    }

    /// Id of customer `index`.
    pub fn customer(&self, index: usize) -> String {
        format!("{}{index:05}", self.customer_prefix())
    }

    /// What every customer id of this run starts with.
    pub fn customer_prefix(&self) -> String {
        format!("cus-{}-", self.run)
    }

    /// The customer who owns account `index`.
    pub fn owner_of(&self, account: usize) -> usize {
        account / 2
    }
}

/// One command of the plan, addressed by index.
#[derive(Debug, Clone)]
pub enum Step {
    /// A command for account `index`.
    Account {
        /// Which account.
        index: usize,
        /// What to do.
        command: AccountCommand,
    },
    /// A command for customer `index`.
    Customer {
        /// Which customer.
        index: usize,
        /// What to do.
        command: CustomerCommand,
    },
}

/// A step with the (simulated) instant it is issued at.
#[derive(Debug, Clone)]
pub struct Planned {
    /// What to do.
    pub step: Step,
    /// When, in simulated time: the year 2025, spread evenly over the plan, so the accounts'
    /// monthly totals fill twelve months.
    pub at: DateTime<Utc>,
}

/// The three phases; each must finish before the next starts.
#[derive(Debug, Default)]
pub struct Plan {
    /// Register every customer and open every account.
    pub setup: Vec<Planned>,
    /// Link every account to its owner.
    pub links: Vec<Planned>,
    /// The random mix.
    pub traffic: Vec<Planned>,
}

impl Plan {
    /// Commands in all phases.
    pub fn len(&self) -> usize {
        self.setup.len() + self.links.len() + self.traffic.len()
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const CITIES: [(&str, &str, &str); 6] = [
    ("Amsterdam", "1011", "NL"),
    ("Berlin", "10115", "DE"),
    ("Lisbon", "1100", "PT"),
    ("Lyon", "69001", "FR"),
    ("Milan", "20121", "IT"),
    ("Oslo", "0150", "NO"),
];

const DEPOSIT_REFERENCES: [&str; 5] = [
    "salary",
    "refund",
    "transfer in",
    "interest",
    "cash deposit",
];
const WITHDRAWAL_REFERENCES: [&str; 6] = [
    "rent",
    "groceries",
    "utilities",
    "card payment",
    "transfer out",
    "atm",
];

fn address(rng: &mut StdRng) -> Result<AddressInput, PlanError> {
    let (city, postal_code, country) = CITIES[rng.random_range(0..CITIES.len())];
    Ok(AddressInput {
        line1: BoundedText::new(format!("{} Market Street", rng.random_range(1..200)))?,
        city: BoundedText::new(city)?,
        postal_code: BoundedText::new(postal_code)?,
        country: CountryCode::try_from(country.to_owned())?,
    })
}

/// Plans about `total` commands (setup included; at least the setup) for `ids`, from `seed`.
pub fn plan(ids: &Ids, total: usize, seed: u64) -> Result<Plan, PlanError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let year_start = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let year = ChronoDuration::days(365);
    let setup_len = ids.customers + ids.accounts;
    let links_len = ids.accounts;
    let traffic_len = total.saturating_sub(setup_len + links_len);
    let all = (setup_len + links_len + traffic_len).max(1) as i32;
    let mut issued = 0i32;
    let mut next_at = || {
        issued += 1;
        year_start + year * issued / all
    };

    let mut plan = Plan::default();
    for index in 0..ids.customers {
        let command = CustomerCommand::Register {
            name: BoundedText::new(format!("Customer {index}"))?,
            email: Email::new(format!("customer{index}@example.com"))?,
            address: address(&mut rng)?,
        };
        plan.setup.push(Planned {
            step: Step::Customer { index, command },
            at: next_at(),
        });
    }
    for index in 0..ids.accounts {
        let command = AccountCommand::Open {
            owner: BoundedText::new(ids.customer(ids.owner_of(index)))?,
        };
        plan.setup.push(Planned {
            step: Step::Account { index, command },
            at: next_at(),
        });
    }
    for index in 0..ids.accounts {
        let command = CustomerCommand::LinkAccount {
            account_id: BoundedText::new(ids.account(index))?,
        };
        plan.links.push(Planned {
            step: Step::Customer {
                index: ids.owner_of(index),
                command,
            },
            at: next_at(),
        });
    }
    // Unfreezes scheduled by earlier freezes: (due step, account).
    let mut unfreezes: VecDeque<(usize, usize)> = VecDeque::new();
    for n in 0..traffic_len {
        if unfreezes.front().is_some_and(|(due, _)| *due <= n)
            && let Some((_, index)) = unfreezes.pop_front()
        {
            plan.traffic.push(Planned {
                step: Step::Account {
                    index,
                    command: AccountCommand::Unfreeze {},
                },
                at: next_at(),
            });
            continue;
        }
        let u: f64 = rng.random();
        // Density ∝ i^(-2/3): with 500 accounts, account 0 gets ~13% of the traffic and the
        // median account well under 1%.
        let account = ((u * u * u) * ids.accounts as f64) as usize % ids.accounts.max(1);
        let customer = rng.random_range(0..ids.customers.max(1));
        let roll = rng.random_range(0..100u32);
        let step = match roll {
            0..52 => Step::Account {
                index: account,
                command: AccountCommand::Deposit {
                    amount_cents: Amount::from_cents(rng.random_range(100..=250_000))?,
                    reference: reference(&mut rng, &DEPOSIT_REFERENCES, n)?,
                },
            },
            52..82 => Step::Account {
                index: account,
                command: AccountCommand::Withdraw {
                    // Up to 3x the average deposit: some of these overdraw and are refused.
                    amount_cents: Amount::from_cents(rng.random_range(100..=300_000))?,
                    reference: reference(&mut rng, &WITHDRAWAL_REFERENCES, n)?,
                },
            },
            82..83 => {
                // Lifted again a little later; more steps than commands in flight, so the
                // unfreeze almost always runs after the freeze.
                let due = n + rng.random_range(100..400);
                let at = unfreezes.partition_point(|(d, _)| *d <= due);
                unfreezes.insert(at, (due, account));
                Step::Account {
                    index: account,
                    command: AccountCommand::Freeze {
                        reason: BoundedText::new("suspicious activity")?,
                    },
                }
            }
            // Mostly refused: the account is not frozen.
            83..84 => Step::Account {
                index: account,
                command: AccountCommand::Unfreeze {},
            },
            // Mostly refused: money is left on the account.
            84..85 => Step::Account {
                index: account,
                command: AccountCommand::Close {},
            },
            85..93 => Step::Customer {
                index: customer,
                command: CustomerCommand::ChangeAddress {
                    address: address(&mut rng)?,
                },
            },
            93..95 => Step::Customer {
                index: customer,
                command: CustomerCommand::Verify {},
            },
            // Refused when already linked or when the customer has ten accounts.
            _ => Step::Customer {
                index: customer,
                command: CustomerCommand::LinkAccount {
                    account_id: BoundedText::new(
                        ids.account(rng.random_range(0..ids.accounts.max(1))),
                    )?,
                },
            },
        };
        plan.traffic.push(Planned {
            step,
            at: next_at(),
        });
    }
    Ok(plan)
}

fn reference(rng: &mut StdRng, choices: &[&str], n: usize) -> Result<Reference, PlanError> {
    let word = choices[rng.random_range(0..choices.len())];
    Ok(BoundedText::new(format!("{word} #{n}"))?)
}
