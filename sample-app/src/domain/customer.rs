//! Customers: register, change address, link accounts, verify identity.

use std::collections::BTreeSet;

use aggregate_actors::{Aggregate, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::dated::Dated;
use super::text::BoundedText;

/// Most accounts one customer may link.
pub const MAX_LINKED_ACCOUNTS: usize = 10;

/// A customer's display name: 1..=100 bytes.
pub type Name = BoundedText<100>;

/// An e-mail address, checked for shape only (one `@`, something on both sides, a dot in the
/// domain, at most 254 bytes): deliverability is not a domain rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// Why an e-mail address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an e-mail address: {0:?}")]
pub struct EmailError(String);

impl Email {
    /// Checks `value` (trimmed, lower-cased domain kept as given).
    pub fn new(value: impl Into<String>) -> Result<Self, EmailError> {
        let value = value.into().trim().to_owned();
        let valid = value.len() <= 254
            && !value.chars().any(|c| c.is_control() || c.is_whitespace())
            && matches!(value.split_once('@'), Some((local, domain))
                if !local.is_empty() && !domain.contains('@')
                    && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
        if valid {
            Ok(Self(value))
        } else {
            Err(EmailError(value))
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> Self {
        email.0
    }
}

/// A two-letter ISO 3166 country code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode(String);

/// Why a country code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("country must be two letters (ISO 3166 alpha-2), got {0:?}")]
pub struct CountryCodeError(String);

impl TryFrom<String> for CountryCode {
    type Error = CountryCodeError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.len() == 2 && value.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(value.to_ascii_uppercase()))
        } else {
            Err(CountryCodeError(value))
        }
    }
}

impl From<CountryCode> for String {
    fn from(code: CountryCode) -> Self {
        code.0
    }
}

/// An address as a command carries it: every field checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    /// Street and number.
    pub line1: BoundedText<100>,
    /// City.
    pub city: BoundedText<64>,
    /// Postal code.
    pub postal_code: BoundedText<16>,
    /// Country.
    pub country: CountryCode,
}

impl From<&AddressInput> for Address {
    fn from(input: &AddressInput) -> Self {
        Address {
            line1: input.line1.to_string(),
            city: input.city.to_string(),
            postal_code: input.postal_code.to_string(),
            country: input.country.0.clone(),
        }
    }
}

/// An address as events and state keep it: plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street and number.
    pub line1: String,
    /// City.
    pub city: String,
    /// Postal code.
    pub postal_code: String,
    /// Country code.
    pub country: String,
}

/// What callers ask a customer to do. As JSON: `{"type": "link_account", "account_id": "a-1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CustomerCommand {
    /// Registers the customer.
    Register {
        /// Display name.
        name: Name,
        /// E-mail address.
        email: Email,
        /// Postal address.
        address: AddressInput,
    },
    /// Moves the customer; the identity must be verified again afterwards. Giving the current
    /// address again is accepted and changes nothing.
    ChangeAddress {
        /// The new address.
        address: AddressInput,
    },
    /// Links an account to the customer.
    LinkAccount {
        /// The account's id.
        account_id: BoundedText<256>,
    },
    /// Records that the customer's identity was verified at the current address. (No fields,
    /// but a struct variant, so that unknown fields are refused.)
    Verify {},
}

/// What happened to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerEvent {
    /// The customer registered.
    Registered {
        /// Display name.
        name: String,
        /// E-mail address.
        email: String,
        /// Postal address.
        address: Address,
        /// When.
        at: DateTime<Utc>,
    },
    /// The customer moved; verification is void.
    AddressChanged {
        /// The new address.
        address: Address,
        /// When.
        at: DateTime<Utc>,
    },
    /// An account was linked.
    AccountLinked {
        /// The account's id.
        account_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The identity was verified.
    Verified {
        /// When.
        at: DateTime<Utc>,
    },
}

/// Everything a customer knows, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    /// True once registered.
    pub registered: bool,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Current address.
    pub address: Address,
    /// How often the address changed.
    pub address_changes: u32,
    /// Linked account ids (sorted).
    pub accounts: BTreeSet<String>,
    /// When the identity was verified at the current address; cleared by a move.
    pub verified_at: Option<DateTime<Utc>>,
    /// When the customer registered.
    pub registered_at: Option<DateTime<Utc>>,
}

/// Why a customer refused a command.
///
/// Serializable, so that a rejection travels back from the node that owns the aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CustomerError {
    /// `register` twice.
    #[error("the customer is already registered")]
    AlreadyRegistered,
    /// Anything but `register` before registering.
    #[error("the customer is not registered")]
    NotRegistered,
    /// The account is linked already.
    #[error("account {0:?} is already linked")]
    AlreadyLinked(String),
    /// More than [`MAX_LINKED_ACCOUNTS`].
    #[error("a customer may link at most {MAX_LINKED_ACCOUNTS} accounts")]
    TooManyAccounts,
    /// `verify` when verified at the current address.
    #[error("the customer is already verified")]
    AlreadyVerified,
}

impl CustomerError {
    /// A stable, machine-readable name of the rule that was broken (used in HTTP errors).
    pub fn code(&self) -> &'static str {
        match self {
            CustomerError::AlreadyRegistered => "already_registered",
            CustomerError::NotRegistered => "not_registered",
            CustomerError::AlreadyLinked(_) => "already_linked",
            CustomerError::TooManyAccounts => "too_many_accounts",
            CustomerError::AlreadyVerified => "already_verified",
        }
    }
}

/// The customer aggregate.
#[derive(Debug)]
pub struct Customer;

impl Aggregate for Customer {
    const TYPE: &'static str = "customer";
    type Command = Dated<CustomerCommand>;
    type Event = CustomerEvent;
    type State = CustomerState;
    type Error = CustomerError;

    fn decide(
        state: &CustomerState,
        command: &Self::Command,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        let at = command.at;
        if let CustomerCommand::Register {
            name,
            email,
            address,
        } = &command.command
        {
            if state.registered {
                return Err(CustomerError::AlreadyRegistered);
            }
            return Ok(vec![CustomerEvent::Registered {
                name: name.to_string(),
                email: email.as_str().to_owned(),
                address: address.into(),
                at,
            }]);
        }
        if !state.registered {
            return Err(CustomerError::NotRegistered);
        }
        let event = match &command.command {
            CustomerCommand::Register { .. } => return Err(CustomerError::AlreadyRegistered),
            CustomerCommand::ChangeAddress { address } => {
                let address = Address::from(address);
                if address == state.address {
                    // Idempotent: a retried request must not void the verification.
                    return Ok(Vec::new());
                }
                CustomerEvent::AddressChanged { address, at }
            }
            CustomerCommand::LinkAccount { account_id } => {
                if state.accounts.contains(account_id.as_str()) {
                    return Err(CustomerError::AlreadyLinked(account_id.to_string()));
                }
                if state.accounts.len() >= MAX_LINKED_ACCOUNTS {
                    return Err(CustomerError::TooManyAccounts);
                }
                CustomerEvent::AccountLinked {
                    account_id: account_id.to_string(),
                    at,
                }
            }
            CustomerCommand::Verify {} => {
                if state.verified_at.is_some() {
                    return Err(CustomerError::AlreadyVerified);
                }
                CustomerEvent::Verified { at }
            }
        };
        Ok(vec![event])
    }

    fn apply(state: &mut CustomerState, event: &CustomerEvent) {
        match event {
            CustomerEvent::Registered {
                name,
                email,
                address,
                at,
            } => {
                state.registered = true;
                state.name.clone_from(name);
                state.email.clone_from(email);
                state.address = address.clone();
                state.registered_at = Some(*at);
            }
            CustomerEvent::AddressChanged { address, .. } => {
                state.address = address.clone();
                state.address_changes += 1;
                state.verified_at = None;
            }
            CustomerEvent::AccountLinked { account_id, .. } => {
                state.accounts.insert(account_id.clone());
            }
            CustomerEvent::Verified { at } => state.verified_at = Some(*at),
        }
    }

    /// Registering starts a customer: a cold customer's `Register` appends without reading.
    fn is_creation(dated: &Dated<CustomerCommand>) -> bool {
        matches!(dated.command, CustomerCommand::Register { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        assert!(Email::new("a@b.co").is_ok());
        for bad in [
            "", "a", "@b.co", "a@b", "a@@b.co", "a b@c.de", "a@.de", "a@de.",
        ] {
            assert!(Email::new(bad).is_err(), "{bad}");
        }
    }
}
