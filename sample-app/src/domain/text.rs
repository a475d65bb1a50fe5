//! Bounded text: strings that are checked once, when they enter the system.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Empty or only whitespace.
    #[error("must not be empty")]
    Empty,
    /// Longer than allowed.
    #[error("is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Contains control characters (newlines, NUL, …), which would corrupt logs and tables.
    #[error("must not contain control characters")]
    ControlCharacters,
}

/// A non-empty string of at most `MAX` bytes without control characters, trimmed.
///
/// Commands use it so that a request that deserializes is already valid: `decide` never sees
/// an empty owner or a megabyte-long reference. Events store plain `String`s instead, because
/// events are facts from the past: tightening a limit later must not make old events unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BoundedText<const MAX: usize>(String);

impl<const MAX: usize> BoundedText<MAX> {
    /// Checks and trims `value`.
    pub fn new(value: impl Into<String>) -> Result<Self, TextError> {
        let value: String = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(TextError::Empty);
        }
        if trimmed.len() > MAX {
            return Err(TextError::TooLong {
                len: trimmed.len(),
                max: MAX,
            });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(TextError::ControlCharacters);
        }
        // Only reallocate when trimming removed something.
        let value = if trimmed.len() == value.len() {
            value
        } else {
            trimmed.to_owned()
        };
        Ok(Self(value))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<const MAX: usize> TryFrom<String> for BoundedText<MAX> {
    type Error = TextError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl<const MAX: usize> From<BoundedText<MAX>> for String {
    fn from(text: BoundedText<MAX>) -> Self {
        text.0
    }
}

impl<const MAX: usize> fmt::Display for BoundedText<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(
            BoundedText::<5>::new("  abc ").map(BoundedText::into_inner),
            Ok("abc".to_owned())
        );
        assert_eq!(BoundedText::<5>::new("   "), Err(TextError::Empty));
        assert_eq!(
            BoundedText::<2>::new("abc"),
            Err(TextError::TooLong { len: 3, max: 2 })
        );
        assert_eq!(
            BoundedText::<9>::new("a\nb"),
            Err(TextError::ControlCharacters)
        );
    }
}
