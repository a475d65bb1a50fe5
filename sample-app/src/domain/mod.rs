//! The ledger's domain: two aggregates and the validated values their commands carry.
//!
//! - [`account`]: ledger accounts (the aggregate whose state grows, so snapshots matter).
//! - [`customer`]: customers who own accounts.
//! - [`amount`], [`text`]: values checked once, when a command is deserialized.
//! - [`dated`]: the command envelope that carries the clock into `decide`.
//! - [`review`]: how long an account may stay frozen before its automatic review.

pub mod account;
pub mod amount;
pub mod customer;
pub mod dated;
pub mod review;
pub mod text;

pub use account::{Account, AccountCommand, AccountError, AccountEvent, AccountState};
pub use amount::Amount;
pub use customer::{Customer, CustomerCommand, CustomerError, CustomerEvent, CustomerState};
pub use dated::Dated;
pub use review::ReviewPolicy;
pub use text::BoundedText;
