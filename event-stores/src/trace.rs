//! W3C Trace Context: the `traceparent` a caller sends, stored with the events its command
//! produced, so one request can be followed from its HTTP call to the rows it wrote.
//!
//! The type is small and dependency-free on purpose: the stores need to parse, store and print
//! it, not to run a tracing pipeline. Users of OpenTelemetry convert with
//! `TraceId::from_bytes(tp.trace_id())` and `SpanId::from_bytes(tp.parent_id())`.

use std::fmt;
use std::str::FromStr;

/// A `traceparent` (version `00`): the trace, the caller's span in it, and the trace flags.
///
/// ```
/// use event_stores::TraceParent;
///
/// let tp: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// assert!(tp.sampled());
/// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert_eq!(tp.child().trace_id(), tp.trace_id());
/// # Ok::<(), event_stores::InvalidTraceParent>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTraceParent {
    /// Not `version-traceid-parentid-flags` with 2, 32, 16 and 2 lowercase hex digits.
    #[error("traceparent {0:?} is not `00-<32 hex>-<16 hex>-<2 hex>`")]
    Format(String),
    /// Version `ff` is forbidden by the specification.
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// An all-zero trace id or parent id.
    #[error("traceparent {0:?} has an all-zero trace id or parent id")]
    ZeroId(String),
    /// The stored form is 25 bytes.
    #[error("a stored traceparent has {0} bytes; expected 25")]
    StoredLength(usize),
}

/// The stored form's length: trace id, parent id, flags.
pub const STORED_LEN: usize = 25;

impl TraceParent {
    /// A traceparent from its parts; all-zero ids are refused.
    pub fn new(
        trace_id: [u8; 16],
        parent_id: [u8; 8],
        flags: u8,
    ) -> Result<Self, InvalidTraceParent> {
        if trace_id == [0; 16] || parent_id == [0; 8] {
            let shown = Self {
                trace_id,
                parent_id,
                flags,
            };
            return Err(InvalidTraceParent::ZeroId(shown.to_string()));
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace (random ids), sampled: for a request that arrived without one.
    pub fn generate() -> Self {
        let trace = uuid::Uuid::new_v4().into_bytes();
        Self {
            trace_id: trace,
            parent_id: random_span_id(),
            flags: 1,
        }
    }

    /// The same trace with a new span id: what this service passes on as its own span.
    pub fn child(&self) -> Self {
        Self {
            parent_id: random_span_id(),
            ..*self
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the caller's span.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller records this trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits, as tracing back ends show it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The stored form: trace id, parent id, flags (25 bytes).
    pub fn to_bytes(&self) -> [u8; STORED_LEN] {
        let mut bytes = [0; STORED_LEN];
        bytes[..16].copy_from_slice(&self.trace_id);
        bytes[16..24].copy_from_slice(&self.parent_id);
        bytes[24] = self.flags;
        bytes
    }

    /// Reads the stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidTraceParent> {
        let bytes: &[u8; STORED_LEN] = bytes
            .try_into()
            .map_err(|_| InvalidTraceParent::StoredLength(bytes.len()))?;
        let mut trace_id = [0; 16];
        let mut parent_id = [0; 8];
        trace_id.copy_from_slice(&bytes[..16]);
        parent_id.copy_from_slice(&bytes[16..24]);
        Self::new(trace_id, parent_id, bytes[24])
    }
}

fn random_span_id() -> [u8; 8] {
    let random = uuid::Uuid::new_v4().into_bytes();
    let mut span = [0; 8];
    span.copy_from_slice(&random[..8]);
    if span == [0; 8] {
        span[7] = 1;
    }
    span
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Lowercase hex digits into `out`; false on any other character or a length mismatch.
fn unhex(text: &str, out: &mut [u8]) -> bool {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return false;
    }
    let value = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        match (value(pair[0]), value(pair[1])) {
            (Some(high), Some(low)) => *byte = high << 4 | low,
            _ => return false,
        }
    }
    true
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    /// Parses a `traceparent` header value. A version above `00` is read by its first four
    /// fields, as the specification asks; extra fields are only allowed then.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let format = || InvalidTraceParent::Format(text.chars().take(80).collect());
        let text_trimmed = text.trim_matches([' ', '\t']);
        let mut parts = text_trimmed.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format());
        };
        let mut version_byte = [0; 1];
        if !unhex(version, &mut version_byte) {
            return Err(format());
        }
        match version_byte[0] {
            0xff => return Err(InvalidTraceParent::ForbiddenVersion),
            0 if parts.next().is_some() => return Err(format()),
            _ => {}
        }
        let (mut trace_id, mut parent_id, mut flag_byte) = ([0; 16], [0; 8], [0; 1]);
        if !unhex(trace, &mut trace_id)
            || !unhex(parent, &mut parent_id)
            || !unhex(flags, &mut flag_byte)
        {
            return Err(format());
        }
        Self::new(trace_id, parent_id, flag_byte[0])
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl serde::Serialize for TraceParent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TraceParent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses_prints_and_stores_unchanged() {
        let tp: TraceParent = EXAMPLE.parse().unwrap();
        assert_eq!(tp.to_string(), EXAMPLE);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            tp.parent_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(tp.sampled());
        assert_eq!(TraceParent::from_bytes(&tp.to_bytes()).unwrap(), tp);
    }

    #[test]
    fn malformed_values_are_refused_with_a_reason() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(
                matches!(
                    bad.parse::<TraceParent>(),
                    Err(InvalidTraceParent::Format(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse::<TraceParent>(),
            Err(InvalidTraceParent::ForbiddenVersion)
        );
        assert!(matches!(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse::<TraceParent>(),
            Err(InvalidTraceParent::ZeroId(_))
        ));
        assert!(matches!(
            TraceParent::from_bytes(&[1; 24]),
            Err(InvalidTraceParent::StoredLength(24))
        ));
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let tp: TraceParent = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next"
            .parse()
            .unwrap();
        assert_eq!(tp.to_string(), EXAMPLE);
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let tp = TraceParent::generate();
        let child = tp.child();
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_ne!(child.parent_id(), tp.parent_id());
        assert_ne!(TraceParent::generate().trace_id(), tp.trace_id());
    }
}
