//! The name of one aggregate's event stream.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::invalid_input::InvalidInput;

/// Longest aggregate type or id accepted, in bytes. Keeps index keys small and rejects
/// accidental payload-sized ids.
pub const MAX_ID_LEN: usize = 256;

/// Addresses one aggregate, and so one event stream: `(aggregate_type, aggregate_id)`.
///
/// Both parts are validated on construction (non-empty, at most [`MAX_ID_LEN`] bytes, no
/// control characters), so a `StreamId` that exists is always storable. Cloning is cheap, and
/// aggregate types are interned: every id of one type shares one allocation of its name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    aggregate_type: Arc<str>,
    aggregate_id: Arc<str>,
}

impl StreamId {
    /// Builds a stream id, rejecting empty, oversized or control-character parts.
    pub fn new(
        aggregate_type: impl AsRef<str>,
        aggregate_id: impl AsRef<str>,
    ) -> Result<Self, InvalidInput> {
        let aggregate_type = aggregate_type.as_ref();
        let aggregate_id = aggregate_id.as_ref();
        validate_part("aggregate type", aggregate_type)?;
        validate_part("aggregate id", aggregate_id)?;
        Ok(Self {
            aggregate_type: interned(aggregate_type),
            aggregate_id: Arc::from(aggregate_id),
        })
    }

    /// Checks that `(aggregate_type, aggregate_id)` would make a valid stream id, without
    /// allocating one. Callers on a hot path validate with this and build the id once.
    pub fn check(aggregate_type: &str, aggregate_id: &str) -> Result<(), InvalidInput> {
        validate_part("aggregate type", aggregate_type)?;
        validate_part("aggregate id", aggregate_id)
    }

    /// Checks that `aggregate_type` would make a valid stream id's type (non-empty, at most
    /// [`MAX_ID_LEN`] bytes, no control characters).
    pub fn check_type(aggregate_type: &str) -> Result<(), InvalidInput> {
        validate_part("aggregate type", aggregate_type)
    }

    /// The aggregate type, e.g. `"account"`.
    pub fn aggregate_type(&self) -> &str {
        &self.aggregate_type
    }

    /// The aggregate's id within its type.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }
}

/// Distinct aggregate types interned at most; beyond them (types made up from input, say) each
/// id gets its own copy, so the table cannot grow without bound.
const MAX_INTERNED_TYPES: usize = 1_024;

/// The shared allocation of the type name `name`.
fn interned(name: &str) -> Arc<str> {
    static TYPES: OnceLock<RwLock<HashSet<Arc<str>>>> = OnceLock::new();
    let types = TYPES.get_or_init(RwLock::default);
    if let Some(found) = types
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
    {
        return Arc::clone(found);
    }
    let mut types = types.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = types.get(name) {
        return Arc::clone(found);
    }
    let name: Arc<str> = Arc::from(name);
    if types.len() < MAX_INTERNED_TYPES {
        types.insert(Arc::clone(&name));
    }
    name
}

fn validate_part(what: &'static str, value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::EmptyId { what });
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidInput::IdTooLong {
            what,
            len: value.len(),
            max: MAX_ID_LEN,
        });
    }
    if has_control_characters(value) {
        return Err(InvalidInput::IdHasControlCharacters { what });
    }
    Ok(())
}

/// `value.chars().any(char::is_control)`, on bytes: checked for every command's id, and
/// decoding each character cost more than the rest of the check. The control characters are
/// U+0000–U+001F, U+007F (one byte each) and U+0080–U+009F, which UTF-8 writes as `C2 80`–`C2 9F`;
/// in valid UTF-8 a `C2` byte always starts a character, so the pair test is exact.
pub(crate) fn has_control_characters(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.iter().any(|&b| b < 0x20 || b == 0x7f)
        || bytes
            .windows(2)
            .any(|pair| pair[0] == 0xc2 && (0x80..=0x9f).contains(&pair[1]))
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_byte_check_finds_control_characters_exactly_where_chars_do(value in any::<String>()) {
            prop_assert_eq!(has_control_characters(&value), value.chars().any(char::is_control));
        }
    }

    #[test]
    fn the_byte_check_sees_every_control_character_and_their_neighbours_are_fine() {
        for c in ['\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}'] {
            assert!(has_control_characters(&format!("id-{c}-x")), "{:?}", c);
        }
        for c in [
            ' ', '~', '\u{a0}', '\u{bf}', '\u{100}', '\u{2028}', 'é', '€',
        ] {
            assert!(!has_control_characters(&format!("id-{c}-x")), "{:?}", c);
        }
    }

    #[test]
    fn ids_of_one_type_share_one_allocation_of_its_name() {
        let a = StreamId::new("interned-type", "1").unwrap();
        let b = StreamId::new(String::from("interned-type"), "2").unwrap();
        assert!(Arc::ptr_eq(&a.aggregate_type, &b.aggregate_type));
        assert_eq!(b.aggregate_type(), "interned-type");
        assert!(!Arc::ptr_eq(&a.aggregate_id, &b.aggregate_id));
    }

    #[test]
    fn empty_parts_are_rejected() {
        assert!(matches!(
            StreamId::new("", "1"),
            Err(InvalidInput::EmptyId {
                what: "aggregate type"
            })
        ));
        assert!(matches!(
            StreamId::new("a", ""),
            Err(InvalidInput::EmptyId {
                what: "aggregate id"
            })
        ));
    }

    #[test]
    fn oversized_and_control_character_ids_are_rejected() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(matches!(
            StreamId::new("a", &long),
            Err(InvalidInput::IdTooLong { .. })
        ));
        assert!(matches!(
            StreamId::new("a", "x\0y"),
            Err(InvalidInput::IdHasControlCharacters { .. })
        ));
        assert!(StreamId::new("a", "x".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn displays_as_type_slash_id() {
        let id = StreamId::new("account", "42").unwrap();
        assert_eq!(id.to_string(), "account/42");
    }
}
