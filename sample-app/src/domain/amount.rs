//! Money amounts in commands: positive and bounded, checked on the way in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest amount one deposit or withdrawal may move: 1 000 000.00 in cents.
pub const MAX_AMOUNT_CENTS: u64 = 100_000_000;

/// Why an amount was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Zero or negative.
    #[error("amount must be positive, got {0} cents")]
    NotPositive(i64),
    /// Above [`MAX_AMOUNT_CENTS`].
    #[error("amount must be at most {MAX_AMOUNT_CENTS} cents, got {0}")]
    TooLarge(u64),
}

/// An amount of money in cents, `1..=MAX_AMOUNT_CENTS`.
///
/// Deserializing checks the bounds, so a JSON command with `"amount_cents": -5` or `0` never
/// reaches the aggregate. It deserializes from a signed integer so a negative amount gets a
/// precise message instead of serde's generic "expected u64".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u64")]
pub struct Amount(u64);

impl Amount {
    /// Checks `cents`.
    pub fn from_cents(cents: u64) -> Result<Self, AmountError> {
        if cents == 0 {
            return Err(AmountError::NotPositive(0));
        }
        if cents > MAX_AMOUNT_CENTS {
            return Err(AmountError::TooLarge(cents));
        }
        Ok(Self(cents))
    }

    /// The amount in cents.
    pub fn cents(self) -> u64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = AmountError;

    fn try_from(cents: i64) -> Result<Self, Self::Error> {
        match u64::try_from(cents) {
            Ok(cents) => Self::from_cents(cents),
            Err(_) => Err(AmountError::NotPositive(cents)),
        }
    }
}

impl From<Amount> for u64 {
    fn from(amount: Amount) -> Self {
        amount.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert_eq!(Amount::from_cents(1).map(Amount::cents), Ok(1));
        assert_eq!(
            Amount::from_cents(MAX_AMOUNT_CENTS).map(Amount::cents),
            Ok(MAX_AMOUNT_CENTS)
        );
        assert_eq!(Amount::from_cents(0), Err(AmountError::NotPositive(0)));
        assert_eq!(
            Amount::from_cents(MAX_AMOUNT_CENTS + 1),
            Err(AmountError::TooLarge(MAX_AMOUNT_CENTS + 1))
        );
        assert_eq!(Amount::try_from(-5), Err(AmountError::NotPositive(-5)));
        assert_eq!(
            Amount::from_cents(12_345).map(|a| a.to_string()),
            Ok("123.45".to_owned())
        );
    }
}
